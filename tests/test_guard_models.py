"""Served guard models as the guard's LLM layer (#20 item 4): each family's parser on answers in its documented
format, and the whole request path against a real loopback server speaking vLLM's protocol."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from servers import free_port, serve

from promptloop.agents.llm.openai_backend import OpenAIChatModel, ServerError
from promptloop.agents.safety import guard_models as gm
from promptloop.agents.safety.guard import SafetyGuard
from promptloop.config import GuardSettings

HERE = Path(__file__).parent
RECORDED = json.loads((HERE / "data" / "guard_model_outputs.json").read_text())
SAFE_TEXT = "a cat playing a grand piano in a sunlit room"
STAB = "a man stabbing a tourist on a sunny beach"
RITUAL = "people gathering for a secret ritual in a cave"
PIRACY = "a pirated copy of a blockbuster film on a laptop"


def test_llama_guard_3_answers():
    out = RECORDED["llama_guard_3"]
    assert gm.parse_llama_guard_3(out[SAFE_TEXT]) == gm.GuardModelAnswer(False)
    assert gm.parse_llama_guard_3(out[STAB]) == gm.GuardModelAnswer(True, ("violence_gore",), ("S1",))
    assert gm.parse_llama_guard_3(out[RITUAL]) == gm.GuardModelAnswer(True, ("violence_gore", "hate"), ("S1", "S10"))
    assert not gm.parse_llama_guard_3(out[PIRACY]).harmful  # S8 (intellectual property) is no video harm
    assert gm.parse_llama_guard_3("I think it is fine") is None and gm.parse_llama_guard_3("") is None
    assert set(gm.LLAMA_GUARD_3) == {f"S{i}" for i in range(1, 15)}


def test_shieldgemma_answers_one_per_policy():
    out = RECORDED["shieldgemma"]

    def answers(text: str) -> list[str]:
        return [out[text][p] for p in gm.SHIELDGEMMA_POLICIES]

    assert gm.parse_shieldgemma(answers(SAFE_TEXT)) == gm.GuardModelAnswer(False)
    assert gm.parse_shieldgemma(answers(STAB)) == gm.GuardModelAnswer(True, ("weapons_illegal",),
                                                                       ("Dangerous Content",))
    ritual = gm.parse_shieldgemma(answers(RITUAL))
    assert ritual.harmful and ritual.categories == ("weapons_illegal", "hate")
    assert gm.parse_shieldgemma(["Yes", "No", "maybe", "No"]) is None  # one unparsed policy: no answer
    assert gm.parse_shieldgemma(["No"]) is None
    prompts = gm.conversations("shieldgemma", STAB)
    assert len(prompts) == 4 and all(f"Human Question: {STAB}\n" in c[0]["content"] for c in prompts)
    assert all("Your answer must start with 'Yes' or 'No'" in c[0]["content"] for c in prompts)


def test_granite_guardian_answers_across_versions():
    out = RECORDED["granite_guardian"]
    assert gm.parse_granite_guardian(out[SAFE_TEXT]) == gm.GuardModelAnswer(False)  # 3.0 / 3.1
    assert gm.parse_granite_guardian(out[STAB]) == gm.GuardModelAnswer(True, (), ("harm",))
    assert gm.parse_granite_guardian(out[RITUAL]).harmful  # 3.3: <think> ... then <score> yes </score>
    assert not gm.parse_granite_guardian(out[PIRACY]).harmful  # 3.2: No plus a confidence tag
    assert gm.parse_granite_guardian("<think>hmm</think>") is None
    assert gm.conversations("granite_guardian", STAB) == [[{"role": "user", "content": STAB}]]


@contextmanager
def guard_server(family: str, log: Path) -> Iterator[tuple[str, str, str]]:
    port = free_port()
    cmd = [sys.executable, str(HERE / "guard_model_server.py"), family, str(port)]
    with serve(cmd, f"http://127.0.0.1:{port}/health", log, timeout=30):
        model = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]["id"]
        yield family, f"http://127.0.0.1:{port}", model


@pytest.fixture(params=["llama_guard_3", "shieldgemma", "granite_guardian"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    with guard_server(request.param, tmp_path / "server.log") as s:
        yield s


def test_the_guard_asks_a_served_guard_model_in_its_format(served, embedder):
    family, url, model = served
    llm = OpenAIChatModel(f"{url}/v1", model, max_retries=0)
    # the logistic detector, which misses RITUAL (the fine-tuned default flags it: hate 0.99), so that what the
    # guard model adds shows
    layers = {"detector": "logreg", "flag_threshold": 0.55}  # its cross-validated threshold on the widened rows
    guard = SafetyGuard(embedder, GuardSettings(use_llm=True, model_family=family, **layers), llm=llm)
    plain = SafetyGuard(embedder, GuardSettings(use_llm=False, **layers))
    assert plain.check(RITUAL).safe  # the other layers miss it; the guard model does not
    safe, stab, ritual, piracy = guard.check_many([SAFE_TEXT, STAB, RITUAL, PIRACY])
    assert safe.safe and piracy.safe and "llm" in safe.layers
    assert not ritual.safe and ritual.action == "sanitize"
    evidence = {k: c.evidence for k, c in ritual.categories.items() if c.evidence.startswith("llm guard")}
    assert evidence and all(family in e for e in evidence.values())
    if family == "llama_guard_3":
        assert set(evidence) == {"violence_gore", "hate"} and "S1, S10" in evidence["hate"]
    elif family == "shieldgemma":
        assert set(evidence) == {"weapons_illegal", "hate"}
    else:  # Granite names no category: the guard's own category head picks the likeliest
        assert len(evidence) == 1
    assert not stab.safe
    sent = httpx.get(f"{url}/requests").json()["requests"]
    assert len(sent) == 4 * gm.requests_per_text(family)  # one batch, the family's requests per text
    assert all(b["temperature"] == 0.0 and b["model"] == model for b in sent)


def test_an_unknown_served_model_is_a_clear_error(embedder, tmp_path: Path):
    with guard_server("llama_guard_3", tmp_path / "server.log") as (_, url, _):
        guard = SafetyGuard(embedder, GuardSettings(use_llm=True, model_family="llama_guard_3"),
                            llm=OpenAIChatModel(f"{url}/v1", "not-served", max_retries=0))
        with pytest.raises(ServerError, match="HTTP 404.*does not exist"):
            guard.check(SAFE_TEXT)
