"""`promptloop db prune`: finished runs lose their checkpoints, the store keeps what lets a re-run skip them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import TypedDict

import pytest
from helpers import invoke_cli
from langgraph.graph import END, START, StateGraph

from promptloop.config import Settings
from promptloop.graphs.checkpoint import make_checkpointer
from promptloop.store.migrate import open_store
from promptloop.store.threads import finished_result, record_finished


class S(TypedDict):
    text: str


def _finished_runs(settings: Settings, engine, n: int) -> list[str]:
    """n finished runs of a small graph on the home's checkpointer, recorded as finished like the real ones."""
    g = StateGraph(S)
    g.add_node("a", lambda s: {"text": s["text"] + " a" * 200})
    g.add_node("b", lambda s: {"text": s["text"] + " b" * 200})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", END)
    saver = make_checkpointer(settings)
    graph = g.compile(checkpointer=saver)
    ids = [f"collect-test-{i}" for i in range(n)]
    for tid in ids:
        graph.invoke({"text": tid}, {"configurable": {"thread_id": tid}})
        record_finished(engine, tid, "collect", {"stored": {"pairs": 1}})
    graph.invoke({"text": "unfinished"}, {"configurable": {"thread_id": "never-recorded"}})
    saver.conn.close()
    return ids


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "plhome"
    monkeypatch.setenv("PROMPTLOOP_HOME", str(home))
    assert invoke_cli("init", "--no-models", "--no-data")[0] == 0
    return home


def test_db_prune_deletes_finished_checkpoints_and_vacuums(home: Path):
    settings = Settings(home=home)
    engine = open_store(settings.database_url)
    ids = _finished_runs(settings, engine, 20)
    code, out, err = invoke_cli("db", "prune", "--keep-threads", "5", "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["threads"] == 15 and json.loads(out)["dry_run"] is True
    code, out, err = invoke_cli("db", "prune", "--keep-threads", "5", "--json")
    rep = json.loads(out)
    assert code == 0 and rep["threads"] == 15 and rep["by_graph"] == {"collect": 15}
    assert rep["bytes_after"] < rep["bytes_before"]  # VACUUM gave the space back
    saver = make_checkpointer(settings)
    left = {t for t in ids if list(saver.list({"configurable": {"thread_id": t}}))}
    assert left == set(ids[-5:])  # the newest finished runs stay inspectable
    assert list(saver.list({"configurable": {"thread_id": "never-recorded"}}))  # unfinished: never pruned
    assert all(finished_result(engine, t) == {"stored": {"pairs": 1}} for t in ids)  # the store remembers
    code, _, err = invoke_cli("db", "prune", "--older-than", "3 fortnights")
    assert code == 2 and "--older-than takes a number with a unit" in err
    code, _, err = invoke_cli("db", "prune", "--older-than", "7d", "--keep-threads", "0")
    assert code == 0 and "pruned 0 finished run(s)" in err  # the rest finished seconds ago


def test_a_finished_loop_is_still_done_after_its_checkpoints_are_pruned(home: Path):
    from promptloop.graphs.loop import LoopConfig, loop_state, run_loop

    settings = Settings(home=home)
    engine = open_store(settings.database_url)
    state = {"config": {"name": "demo"}, "round": 1, "champion": "demo-r1-dpo", "done": True,
             "stop_reason": "ran 2 rounds", "history": [{"round": 0}, {"round": 1}]}
    record_finished(engine, LoopConfig(name="demo").thread_id, "loop", state)  # as run_loop does when it ends
    deps = SimpleNamespace(engine=engine, checkpointer=make_checkpointer(settings))  # no checkpoints at all
    run = run_loop(deps, LoopConfig(name="demo"))
    assert run.already_done and run.state["champion"] == "demo-r1-dpo"  # nothing is run again
    assert loop_state(deps.checkpointer, "demo", engine)["stop_reason"] == "ran 2 rounds"
    assert loop_state(deps.checkpointer, "other", engine) is None
