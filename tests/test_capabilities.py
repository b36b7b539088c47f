"""The critic's verdict on its model is measured once and remembered in the store, per model and probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import invoke_cli
from test_agents import FAITHFUL, GarbageModel, JSONCriticModel

from promptloop.agents.text_critic import TextCritic
from promptloop.config import BackendSettings, Settings
from promptloop.services import Services
from promptloop.store.capabilities import CapabilityRecord, forget_capabilities, list_capabilities


def test_a_failed_probe_is_remembered_and_the_next_process_asks_nothing(embedder, guard, engine):
    memory = CapabilityRecord(engine, "transformers:garbage", "json_critique", "probe-a")
    assert memory.verdict() is None
    first = GarbageModel()
    critic = TextCritic(embedder, guard, first, llm_retries=1, breaker_window=5, memory=memory)
    critic.critique_many([("a cat", FAITHFUL)] * 3)
    assert critic.probing and first.sizes == [3, 3]  # 3 of the window's 5 answers seen: no verdict yet
    critic.critique_many([("a cat", FAITHFUL)] * 20)
    assert not critic.probing and first.sizes == [3, 3, 2, 2]  # the probe's rest and its re-ask
    [row] = list_capabilities(engine)
    assert (row.model, row.capable, row.asked, row.valid) == ("transformers:garbage", False, 5, 0)

    later = GarbageModel()  # a new process: a new critic on the same store
    critic = TextCritic(embedder, guard, later, llm_retries=1, breaker_window=5, memory=memory)
    assert not critic.probing  # the store's verdict is read: nothing left to measure
    out = critic.critique_many([("a cat", FAITHFUL)] * 20)
    assert later.calls == 0 and all(k.fallback and "LLM critic off" in k.issues[-1] for k in out)

    other = GarbageModel()  # another template or budget is another probe: measured again
    TextCritic(embedder, guard, other, llm_retries=0, breaker_window=5,
               memory=CapabilityRecord(engine, "transformers:garbage", "json_critique", "probe-b")).critique_many(
        [("a cat", FAITHFUL)] * 8)
    assert other.sizes == [5]
    assert forget_capabilities(engine, "transformers:garbage") == 2 and memory.verdict() is None


def test_a_capable_model_is_remembered_and_asked_without_a_probe(embedder, guard, engine):
    memory = CapabilityRecord(engine, "openai:big@http://teacher:8000/v1", "json_critique", "p")
    first = JSONCriticModel()
    TextCritic(embedder, guard, first, llm_retries=1, breaker_window=5, memory=memory).critique_many(
        [("a cat", FAITHFUL)] * 20)
    assert first.sizes == [5, 15] and memory.verdict() is True
    later = JSONCriticModel()
    out = TextCritic(embedder, guard, later, llm_retries=1, breaker_window=5, memory=memory).critique_many(
        [("a cat", FAITHFUL)] * 20)
    assert later.sizes == [20] and all(k.llm_used for k in out)  # one call, no probe split
    memory.remember(asked=5, valid=1, capable=False)  # a later measurement replaces the verdict, no duplicate row
    assert memory.verdict() is False and len(list_capabilities(engine)) == 1


def test_the_services_key_names_the_model_and_changes_with_the_probe(tmp_path: Path):
    served = BackendSettings(kind="openai", model="qwen", base_url="http://user:secret@gpu-box:8000/v1",
                             api_key="sk-planted")
    assert served.identity("smollm2") == "openai:qwen@http://gpu-box:8000/v1"  # no credentials
    assert BackendSettings().identity("smollm2-135m-instruct") == "transformers:smollm2-135m-instruct"
    rt = Services(Settings(home=tmp_path / "home"))
    key = rt.critique_capability()
    assert (key.model, key.capability) == ("transformers:smollm2-135m-instruct", "json_critique")
    budget = Services(Settings(home=tmp_path / "home", critic={"llm_max_new_tokens": 200})).critique_capability()
    assert budget.model == key.model and budget.probe != key.probe
    assert rt.critic.memory == key  # the graph's critic reads and writes this record
    off = Services(Settings(home=tmp_path / "home", critic={"llm_capability_memory": False}))
    assert off.critic.memory is None


def test_models_capabilities_and_recheck_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for k in [k for k in __import__("os").environ if k.startswith("PROMPTLOOP_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("PROMPTLOOP_HOME", str(tmp_path / "home"))
    rt = Services(Settings(home=tmp_path / "home"))
    CapabilityRecord(rt.engine, "transformers:smollm2-135m-instruct", "json_critique", "p").remember(
        asked=12, valid=2, capable=False)
    code, out, _ = invoke_cli("models", "capabilities", "--json")
    [row] = json.loads(out)
    assert code == 0 and (row["model"], row["capable"], row["valid"], row["asked"]) == (
        "transformers:smollm2-135m-instruct", False, 2, 12)
    code, _, err = invoke_cli("models", "recheck", "transformers:nope")
    assert code == 2 and err.strip().startswith("error: no measured capabilities for 'transformers:nope'")
    assert len(list_capabilities(rt.engine)) == 1  # nothing changed
    code, _, err = invoke_cli("--set", "critic.llm_max_new_token=48", "models", "recheck")  # a typo'd --set path
    assert code == 2 and err.count("\n") == 1 and "critic has no field 'llm_max_new_token'" in err
    code, _, err = invoke_cli("--set", "critic.llm_max_new_tokens=48", "models", "recheck")
    assert code == 0 and "forgot 1 measured capability" in err and list_capabilities(rt.engine) == []
