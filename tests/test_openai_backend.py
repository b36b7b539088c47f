"""The OpenAI-compatible backend against a real server on loopback (transformers serve on SmolLM2).

Behaviour a real server cannot be made to show on demand (rate limits, a
dying connection, vLLM's runtime LoRA endpoints, which need vLLM and CUDA) is
checked with httpx's MockTransport answering in the same wire format.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from servers import transformers_server

from promptloop.agents.llm.base import SamplingParams
from promptloop.agents.llm.openai_backend import OpenAIChatModel, ServerError
from promptloop.config import Settings

CONVS = [[{"role": "user", "content": f"Describe {x} in one sentence."}]
         for x in ("a cat playing piano", "a red car on a mountain road", "rain on a window")]


@pytest.fixture(scope="module")
def server_url(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    with transformers_server(smollm_path, log) as url:
        yield url


def test_greedy_over_http_matches_in_process(server_url: str, smollm_path: Path, chat_model):
    """Same weights, same chat template, greedy: the server's text is the in-process backend's text."""
    remote = OpenAIChatModel(server_url, str(smollm_path), concurrency=3)
    params = SamplingParams(n=1, max_new_tokens=24, temperature=0.0)
    assert remote.generate(CONVS, params) == chat_model.generate(CONVS, params)
    assert remote.requests == 3


def test_n_is_topped_up_when_the_server_ignores_it(server_url: str, smollm_path: Path):
    remote = OpenAIChatModel(server_url, str(smollm_path), concurrency=4,
                             extra_body={"generation_config": json.dumps({"do_sample": True})})
    out = remote.generate(CONVS[:2], SamplingParams(n=3, max_new_tokens=12, temperature=1.0, seed=3))
    assert [len(o) for o in out] == [3, 3] and all(t for o in out for t in o)
    assert remote.requests == 6  # transformers serve answers one choice per request
    assert len(set(out[0])) > 1  # seeds differ per request, so samples differ


def test_rewrite_graph_runs_with_the_rewriter_on_the_server(server_url: str, smollm_path: Path, tmp_path: Path):
    """Backends per agent: rewriter over HTTP, critic and guard in process."""
    from promptloop.agents.llm.openai_backend import OpenAIChatModel as Remote
    from promptloop.agents.llm.transformers_backend import TransformersChatModel
    from promptloop.api import rewrite_many
    from promptloop.services import Services

    settings = Settings(home=tmp_path / "home", base_model=str(smollm_path), device="cpu",
                        generation={"max_new_tokens": 40}, critic={"use_llm": False},
                        backends={"rewriter": {"kind": "openai", "base_url": server_url, "model": str(smollm_path),
                                              "extra_body": {"generation_config": '{"do_sample": true}'}}})
    rt = Services(settings)
    assert isinstance(rt.model_for("rewriter"), Remote)
    assert isinstance(rt.model_for("critic"), TransformersChatModel)
    assert rt.model_for("guard") is rt.model_for("critic")  # same backend, one instance
    assert rt.critic.llm is None  # critic.use_llm=false: deterministic critic, no model call
    [out] = rewrite_many(["a fox in the snow"], services=rt, n=2, max_refine_steps=0, model_version="base")
    # the rewriter's repetition penalty is refused once (transformers serve: 422), then two candidates
    remote = rt.model_for("rewriter")
    assert out.final_prompt and 1 <= len(out.candidates) <= 2 and remote.requests == 3
    assert remote.sampling_extensions is False
    assert "total" in out.reward


def test_sampling_controls_over_http(server_url: str, smollm_path: Path, chat_model, caplog):
    """stop is OpenAI's own field; vLLM's extra fields are dropped once (with a warning) where a server refuses them.

    transformers serve answers 422 to fields it does not know (its _validate_request): the client asks
    again without them and remembers; the text is then the in-process greedy text.
    """
    remote = OpenAIChatModel(server_url, str(smollm_path))
    greedy = SamplingParams(n=1, max_new_tokens=24, temperature=0.0)
    full = remote.generate(CONVS[:1], greedy)[0][0]
    stop = full.split()[3]
    assert remote.generate(CONVS[:1], greedy.model_copy(update={"stop": [stop]}))[0][0] == full[:full.index(stop)].strip()
    with caplog.at_level("WARNING"):
        out = remote.generate(CONVS[:1], greedy.model_copy(update={"repetition_penalty": 1.3, "top_k": 5}))
    assert remote.sampling_extensions is False and out[0][0] == full
    assert "rejected repetition_penalty, top_k" in caplog.text
    requests = remote.requests
    remote.generate(CONVS[:1], greedy.model_copy(update={"min_p": 0.1}))
    assert remote.requests == requests + 1  # remembered: no second refusal


def test_pairwise_judge_on_a_real_server_records_its_verdict_with_the_decision(server_url: str, smollm_path: Path,
                                                                               tmp_path: Path):
    """eval.judge on transformers serve: both orders asked, every prompt accounted for, stored with the decision."""
    from langgraph.runtime import Runtime
    from sqlmodel import Session, select

    from promptloop.graphs import loop
    from promptloop.services import Services
    from promptloop.store.models import ModelVersion
    from promptloop.store.versions import ensure_base, register

    rt = Services(Settings(home=tmp_path / "home", base_model=str(smollm_path), device="cpu",
                           eval={"judge": {"kind": "openai", "base_url": server_url, "model": str(smollm_path)}}))
    ensure_base(rt.engine, rt.settings.base_model)
    register(rt.engine, name="cand", base_model="m", adapter_path="/x", parent_id=None, algorithm="dpo",
             round_index=0, metrics={}, data_provenance={})
    prompts = ["a fox in the snow", "a tram on a hill", "rain on a window"]
    texts = {"base": ["a fox", "a tram", "rain"],
             "cand": ["A red fox leaps through fresh snow at dawn, soft light, wide shot.",
                      "An old green tram climbs a steep cobbled hill at sunset, tracking shot.",
                      "Raindrops run down a window at night, neon reflections, macro close-up."]}
    outputs = {}
    for name, totals in (("base", [0.5, 0.52, 0.48]), ("cand", [0.6, 0.61, 0.6])):
        outputs[name] = str(tmp_path / f"{name}.jsonl")
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"prompt": p, "output": o, "judge_total": t}) + "\n"
            for p, o, t in zip(prompts, texts[name], totals, strict=True)))
    row = {"round": 0, "eval": {"base": {"judge_total": 0.5}, "cand": {"judge_total": 0.6}}, "eval_outputs": outputs}
    loop.promote_stage({"round": 0, "champion": "base", "candidate": "cand"},
                       Runtime(context=loop.LoopContext(rt)), loop.LoopConfig(name="t", rounds=1), row)
    pw = row["decision"]["pairwise"]
    assert pw["n"] == 3 and pw["wins"] + pw["ties"] + pw["losses"] + pw["invalid"] == 3
    assert rt.pairwise_judge.requests == 6  # both orders for each prompt
    assert pw["first_position_rate"] is None or 0 <= pw["first_position_rate"] <= 1
    with Session(rt.engine) as s:
        stored = s.exec(select(ModelVersion).where(ModelVersion.name == "cand")).one().metrics["decision"]
    assert stored["pairwise"] == pw

    # `promptloop eval` compares every evaluated system with the champion (now cand) the same way
    from rich.console import Console

    from promptloop.commands.evaluate import pairwise_table, pairwise_vs_champion
    from promptloop.evaluation.runner import EvalReport, SystemResult

    report = EvalReport("eval", 3, [SystemResult(n, n, {}, outputs_path=outputs[n]) for n in ("base", "cand")])
    found = pairwise_vs_champion(rt, report)
    assert list(found) == ["base"] and found["base"]["champion"] == "cand" and found["base"]["n"] == 3
    assert rt.pairwise_judge.requests == 12
    console = Console(width=200, record=True)
    console.print(pairwise_table(found))
    assert "pairwise judge vs the champion (cand)" in console.export_text()


def test_server_down_is_a_clear_error_after_retries():
    remote = OpenAIChatModel("http://127.0.0.1:9", "m", max_retries=2, backoff=0.01, timeout=2)
    with pytest.raises(ServerError, match=r"failed after 3 attempts: ConnectError"):
        remote.chat(CONVS[0])


def test_openai_backend_needs_a_url():
    with pytest.raises(ValueError, match="needs base_url"):
        Settings(backends={"critic": {"kind": "openai"}})


# --- wire-format checks with MockTransport ------------------------------------------------------------------
def _reply(body: dict, text: str = "ok") -> httpx.Response:
    return httpx.Response(200, json={"id": "x", "object": "chat.completion", "model": body["model"],
                                     "choices": [{"index": i, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": f"{text} {i}"}}
                                                 for i in range(body.get("n", 1))]})


def test_retries_with_backoff_on_429_and_5xx():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, text="slow down")
        if len(calls) == 2:
            return httpx.Response(503, text="busy")
        return _reply(json.loads(request.content))

    remote = OpenAIChatModel("http://srv/v1", "m", backoff=0.05, transport=httpx.MockTransport(handler))
    assert remote.chat(CONVS[0], SamplingParams(n=2)) == ["ok 0", "ok 1"]
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.05 and calls[2] - calls[1] >= 0.1  # exponential


def test_client_errors_are_not_retried():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(404, json={"error": {"message": "model 'm' not found"}})

    remote = OpenAIChatModel("http://srv", "m", transport=httpx.MockTransport(handler))
    with pytest.raises(ServerError, match="HTTP 404.*not found"):
        remote.chat(CONVS[0])
    assert calls == [1]


def test_concurrency_is_bounded():
    in_flight, peak, lock = [0], [0], threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return _reply(json.loads(request.content))

    remote = OpenAIChatModel("http://srv/v1", "m", concurrency=3, transport=httpx.MockTransport(handler))
    out = remote.generate(CONVS * 4, SamplingParams(n=1))
    assert len(out) == 12 and peak[0] == 3


def test_structured_output_is_sent_and_dropped_when_rejected():
    from promptloop.agents.text_critic import LLMCritique

    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if "response_format" in body:
            return httpx.Response(400, json={"error": "response_format is not supported"})
        return _reply(body, '{"harmless": 1, "accurate": 0.5, "helpful": 0.5}')

    remote = OpenAIChatModel("http://srv/v1", "m", transport=httpx.MockTransport(handler))
    params = SamplingParams(n=1, temperature=0.0, json_schema=LLMCritique.model_json_schema())
    remote.chat(CONVS[0], params)
    assert bodies[0]["response_format"]["type"] == "json_schema"
    assert bodies[0]["response_format"]["json_schema"]["schema"]["required"] == ["harmless", "accurate", "helpful"]
    assert "response_format" not in bodies[1] and remote.structured_output is False
    remote.chat(CONVS[0], params)
    assert "response_format" not in bodies[2]  # remembered: no second rejected request


class VLLMStub:
    """One vLLM OpenAI server's LoRA routes and model check, answering as vLLM's source does
    (entrypoints/openai/serving_models.py and the serving engine's _check_model): 200 with a plain-text
    "Success: ..." for a load or unload; 400 InvalidUserInput "has already been loaded" for a name it holds;
    404 NotFoundError "cannot be found" for unloading an unknown name and "The model `x` does not exist." for a
    request naming one; errors as {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, base: str = "base"):
        self.base, self.loras, self.log = base, {}, []

    @staticmethod
    def error(code: int, message: str, kind: str) -> httpx.Response:
        return httpx.Response(code, json={"error": {"message": message, "type": kind, "param": None, "code": code}})

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path == "/v1/models":
            cards = [{"id": self.base, "object": "model", "root": self.base, "parent": None}]
            cards += [{"id": n, "object": "model", "root": p, "parent": self.base} for n, p in self.loras.items()]
            return httpx.Response(200, json={"object": "list", "data": cards})
        body = json.loads(request.content)
        name = body.get("lora_name") or body.get("model")
        self.log.append((path.rsplit("/", 1)[-1], name))
        if path == "/v1/load_lora_adapter":
            if not body.get("lora_name") or not body.get("lora_path"):
                return self.error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
            if name in self.loras:
                return self.error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
            self.loras[name] = body["lora_path"]
            return httpx.Response(200, text=f"Success: LoRA adapter '{name}' added successfully.")
        if path == "/v1/unload_lora_adapter":
            if name not in self.loras:
                return self.error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            del self.loras[name]
            return httpx.Response(200, text=f"Success: LoRA adapter '{name}' removed successfully.")
        if name != self.base and name not in self.loras:
            return self.error(404, f"The model `{name}` does not exist.", "NotFoundError")
        return _reply(body)

    def client(self, **kw) -> OpenAIChatModel:
        return OpenAIChatModel("http://vllm:8000/v1", self.base, transport=httpx.MockTransport(self.handler), **kw)


def _adapter(root, name: str, weights: bytes):
    folder = root / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 16}')
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def test_many_workers_share_one_vllm_without_unloading_each_other(tmp_path):
    from promptloop.agents.llm.openai_backend import served_name

    server = VLLMStub()
    r0, r1 = _adapter(tmp_path, "r0-sft", b"w0"), _adapter(tmp_path, "r1-dpo", b"w1")
    a, b = server.client(), server.client()
    a.load_adapter("r0-sft", r0)
    b.load_adapter("r0-sft", r0)  # 400 "already loaded": success for b, but not b's to unload
    served0 = served_name("r0-sft", str(r0))
    assert served0.startswith("r0-sft-") and list(server.loras) == [served0]
    assert a.owned == {served0: None} and not b.owned
    assert b.chat(CONVS[0], adapter="r0-sft") == ["ok 0"]
    a.load_adapter("r1-dpo", r1)  # switching loads the new one and unloads nothing: b may still use r0
    assert set(server.loras) == {served0, served_name("r1-dpo", str(r1))}
    assert not any(op == "unload_lora_adapter" for op, _ in server.log)
    assert b.chat(CONVS[0], adapter="r0-sft") == ["ok 0"] and a.chat(CONVS[0], adapter="r1-dpo") == ["ok 0"]
    # a restarted worker asks for the same name (version + weights digest) and finds it loaded
    c = server.client()
    c.load_adapter("r0-sft", r0)
    assert c.served["r0-sft"] == served0 and not c.owned
    # the same version name with other weights (another store) is another adapter on the server
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert served_name("r0-sft", str(_adapter(other, "r0-sft", b"different"))) != served0
    with pytest.raises(ValueError, match="already bound"):
        a.load_adapter("r1-dpo", tmp_path / "other")
    with pytest.raises(KeyError, match="r9"):
        a.chat(CONVS[0], adapter="r9")


def test_at_the_lora_limit_a_worker_unloads_its_least_recent_free_adapter(tmp_path, caplog):
    server = VLLMStub()
    paths = {n: _adapter(tmp_path, n, n.encode()) for n in ("r0-sft", "r1-dpo", "r2-dpo", "r3-dpo")}
    busy = {"r0-sft"}  # an unfinished shared job samples with r0
    a = server.client(max_loras=2, in_use=lambda: busy)
    a.load_adapter("r0-sft", paths["r0-sft"])
    a.load_adapter("r1-dpo", paths["r1-dpo"])
    a.chat(CONVS[0], adapter="r0-sft")  # r1 is now the least recently used
    a.load_adapter("r2-dpo", paths["r2-dpo"])
    unloaded = [n for op, n in server.log if op == "unload_lora_adapter"]
    assert len(unloaded) == 1 and unloaded[0].startswith("r1-dpo-")  # not r0: a job still samples with it
    assert "r1-dpo" not in a.adapters and {"r0-sft", "r2-dpo"} <= set(a.adapters) and len(server.loras) == 2
    busy.add("r2-dpo")
    b = server.client(max_loras=2)  # owns nothing: never unloads another worker's adapter, loads anyway
    with caplog.at_level("WARNING"):
        b.load_adapter("r3-dpo", paths["r3-dpo"])
    assert len(server.loras) == 3 and "none this worker loaded is free to unload" in caplog.text
    assert [n for op, n in server.log if op == "unload_lora_adapter"] == unloaded


def test_an_adapter_unloaded_under_a_worker_is_loaded_again(tmp_path):
    server = VLLMStub()
    a = server.client()
    a.load_adapter("r0-sft", _adapter(tmp_path, "r0-sft", b"w0"))
    server.loras.clear()  # the server restarted, or an operator unloaded it
    assert a.chat(CONVS[0], adapter="r0-sft") == ["ok 0"]
    ops = [op for op, _ in server.log]
    assert ops == ["load_lora_adapter", "completions", "load_lora_adapter", "completions"]
    d = server.client()
    server.base = "another-model"  # a request naming an unknown base model: 404, not retried or reloaded
    with pytest.raises(ServerError, match="HTTP 404.*The model `base` does not exist"):
        d.chat(CONVS[0])


def test_with_the_filesystem_resolver_workers_load_nothing(tmp_path):
    server = VLLMStub()
    r0 = _adapter(tmp_path, "r0-sft", b"w0")
    a = server.client(adapter_loading="resolver")
    a.load_adapter("r0-sft", r0)
    server.loras["r0-sft"] = str(r0)  # vLLM's lora_filesystem_resolver loads the folder the request names
    assert a.chat(CONVS[0], adapter="r0-sft") == ["ok 0"]
    assert server.log == [("completions", "r0-sft")]  # no load, no unload: the folder's name is the model


def test_vllm_backend_says_what_it_needs_without_vllm(monkeypatch: pytest.MonkeyPatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # as where vLLM is not installed (import raises)
    from promptloop.agents.llm.vllm_backend import VLLMChatModel
    from promptloop.errors import PromptloopError

    with pytest.raises(PromptloopError, match=r"promptloop\[vllm\]"):
        VLLMChatModel("/nonexistent")


def test_served_teacher_samples_and_refines_over_http_into_teacher_sft_rows(server_url: str, smollm_path: Path,
                                                                         tmp_path: Path):
    """backends.teacher on transformers serve: n samples per prompt and the refinements come over HTTP, through
    the same critic and guard, into SFT rows with source teacher:NAME; the student samples nothing.

    The critic asks no LLM for scores (critic.use_llm=false, #17): refinement still has a model, the teacher's."""
    from sqlmodel import Session, select

    from promptloop.services import Services
    from promptloop.store import repository as repo
    from promptloop.store.engine import session_scope
    from promptloop.store.models import Candidate, SFTExample
    from promptloop.store.teachers import teacher_sets

    rt = Services(Settings(home=tmp_path / "home", base_model=str(smollm_path), device="cpu",
                           generation={"max_new_tokens": 24},
                           # neutral controls: transformers serve refuses repetition_penalty (422), and the refused
                           # first requests would be counted too (that fallback has its own test)
                           sampling={"rewriter": {"repetition_penalty": 1.0}},
                           critic={"use_llm": False, "accurate_threshold": 0.99, "helpful_threshold": 0.0,
                                   "max_refine_steps": 1},
                           backends={"teacher": {"kind": "openai", "base_url": server_url, "model": str(smollm_path),
                                                 "concurrency": 2}}))
    with session_scope(rt.engine) as s:
        for p in ("a fox in the snow", "a tram on a hill"):
            repo.add_prompt(s, p, split="train")
    rep = rt.collect("sft", teacher="smol-served", n=2, round_index=0)
    teacher = rt.model_for("teacher")
    # 2 prompts x n=2 samples, one choice per request, then one refinement per prompt (accurate bar 0.99 fails)
    assert teacher.requests == 6
    assert rep.prompts == 2 and rep.stored["rejected"] == 2  # nothing reaches a 0.99 intent bar
    with Session(rt.engine) as s:
        rows = s.exec(select(SFTExample)).all()
        cands = s.exec(select(Candidate)).all()
    assert {r.source for r in rows} == {"teacher:smol-served"} and len(rows) == 2
    assert {c.origin for c in cands} <= {"teacher", "refine"} and any(c.origin == "teacher" for c in cands)
    assert all(c.lineage.get("teacher") == "smol-served" for c in cands)
    assert all(r.critique_trail and r.critique_trail[-1].get("final") for r in rows)
    sets = teacher_sets(rt.engine)
    assert [(t.name, t.recorded) for t in sets] == [("smol-served", False)]
