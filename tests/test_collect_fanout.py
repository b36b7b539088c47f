"""The collection graph's Send fan-out: parts, max_concurrency, ordering, per-part resume and progress.

The fan-out machinery is checked with a small recording pipeline (a real
compiled LangGraph graph, real SQLite checkpointer) so concurrency and
failures can be controlled; the last test runs the real rewrite pipeline on
the embedded models.
"""

import threading
import time

import pytest
from langgraph.graph import END, START, StateGraph
from sqlmodel import Session, select

from promptloop.config import Settings
from promptloop.graphs.checkpoint import make_checkpointer
from promptloop.graphs.collection import (
    CollectContext,
    CollectState,
    build_collect_graph,
    run_collection,
)
from promptloop.graphs.rewrite import RewriteAgents
from promptloop.store import repository as repo
from promptloop.store.engine import make_engine, session_scope
from promptloop.store.migrate import upgrade
from promptloop.store.models import Candidate, TraceEvent


class Recorder:
    """A pipeline that upper-cases prompts, records which parts ran and how many ran at once."""

    def __init__(self, delay: float = 0.2, fail_on: str | None = None):
        self.delay, self.fail_on = delay, fail_on
        self.lock = threading.Lock()
        self.running = self.peak = 0
        self.calls: list[list[str]] = []

    def node(self, state: CollectState) -> dict:
        prompts = [it["prompt"] for it in state["items"]]
        with self.lock:
            self.calls.append(prompts)
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.delay)
            if self.fail_on in prompts:
                raise RuntimeError(f"part with '{self.fail_on}' failed")
            return {"items": [{**it, "final_prompt": it["prompt"].upper()} for it in state["items"]]}
        finally:
            with self.lock:
                self.running -= 1

    def graph(self):
        g = StateGraph(CollectState)
        g.add_node("work", self.node)
        g.add_edge(START, "work")
        g.add_edge("work", END)
        return g.compile(name="recorder")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """The same store and checkpointer on SQLite and on PostgreSQL (pooled connections)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    settings = Settings(home=tmp_path, database_url=url)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    with session_scope(engine) as s:
        prompts = [repo.add_prompt(s, f"prompt {i}", split="train", source="test")[0] for i in range(7)]
    saver = make_checkpointer(settings)
    yield engine, saver, prompts, settings
    saver.conn.close()  # the connection, or on PostgreSQL the pool
    engine.dispose()


def _graph(engine, saver, pipeline, persisted: list):
    def persist(engine, items, prompt_ids, ctx):
        persisted.append(list(zip(prompt_ids, [it["final_prompt"] for it in items], strict=True)))
        return {"stored": len(items)}

    agents = RewriteAgents(guard=None, rewriter=None, critic=None, judge=None)  # the recorder uses none
    return build_collect_graph("fanout_test", agents, engine, persist, pipeline=pipeline, checkpointer=saver)


@pytest.mark.parametrize("concurrency", [1, 3, 4])
def test_parts_run_with_bounded_concurrency_and_gather_in_order(store, concurrency):
    engine, saver, prompts, _ = store
    rec, persisted, progress = Recorder(), [], []
    graph = _graph(engine, saver, rec.graph(), persisted)
    report = run_collection(graph, "pairs", prompts, CollectContext(part_size=2), round_index=0, batch_size=7,
                            key={"c": concurrency}, max_concurrency=concurrency,
                            on_chunk=lambda done, stored: progress.append((done, stored)))
    assert sorted(len(c) for c in rec.calls) == [1, 2, 2, 2]  # 7 prompts -> parts of 2, 2, 2, 1
    assert rec.peak == concurrency  # Send fans out; max_concurrency bounds the parts in flight
    if type(saver.conn).__name__ == "ConnectionPool":  # PostgreSQL: parts check out pooled connections
        assert saver.conn.max_size >= 4 and saver.conn.get_stats()["requests_num"] >= 4
        # and the store's rows go through psycopg_pool too (SQLAlchemy borrows per checkout: NullPool)
        assert type(engine.pool).__name__ == "NullPool" and engine.psycopg_pool.get_stats()["requests_num"] >= 1
    # gathered back in prompt order, whatever order the parts finished in
    assert persisted == [[(p.id, p.text.upper()) for p in prompts]]
    assert report.stored == {"stored": 7} and report.chunks == 1
    # the bar moves per part (rows 0), then once more with what the chunk stored
    assert sorted(d for d, s in progress[:-1]) == [1, 2, 2, 2] and all(s == {} for _, s in progress[:-1])
    assert progress[-1] == (0, {"stored": 7})


def test_a_resumed_chunk_reruns_only_the_parts_that_had_not_finished(store):
    engine, saver, prompts, _ = store
    persisted = []
    failing = Recorder(delay=0.05, fail_on="prompt 4")
    graph = _graph(engine, saver, failing.graph(), persisted)
    ctx = CollectContext(part_size=2)
    with pytest.raises(RuntimeError, match="prompt 4"):
        run_collection(graph, "pairs", prompts, ctx, round_index=0, batch_size=7, key={"r": 1}, max_concurrency=4)
    assert len(failing.calls) == 4 and persisted == []

    healthy = Recorder(delay=0.05)  # same graph shape, a pipeline that now succeeds
    graph = _graph(engine, saver, healthy.graph(), persisted)
    report = run_collection(graph, "pairs", prompts, ctx, round_index=0, batch_size=7, key={"r": 1},
                            max_concurrency=4)
    assert report.resumed_chunks == 1
    assert healthy.calls == [["prompt 4", "prompt 5"]]  # the three finished parts came from the checkpoint
    assert persisted == [[(p.id, p.text.upper()) for p in prompts]]


def test_a_pruned_collection_is_still_skipped_and_its_checkpoints_are_gone(store):
    from promptloop.graphs.retention import prune

    engine, saver, prompts, settings = store
    rec, persisted = Recorder(delay=0.01), []
    graph = _graph(engine, saver, rec.graph(), persisted)
    kw = dict(round_index=0, batch_size=3, key={"prune": 1}, max_concurrency=2, engine=engine)
    first = run_collection(graph, "pairs", prompts, CollectContext(part_size=2), **kw)
    assert (first.chunks, first.skipped_chunks, len(persisted)) == (3, 0, 3)

    def has_checkpoints(thread_id: str) -> bool:
        return bool(list(saver.list({"configurable": {"thread_id": thread_id}})))

    assert all(has_checkpoints(t) for t in first.thread_ids)
    assert prune(engine, saver, settings, keep=0, dry_run=True).threads == 3  # counted, nothing deleted
    assert all(has_checkpoints(t) for t in first.thread_ids)
    rep = prune(engine, saver, settings, keep=1)  # the newest finished run keeps its checkpoints
    assert rep.threads == 2 and rep.by_graph == {"collect": 2}
    assert sum(has_checkpoints(t) for t in first.thread_ids) == 1
    rep = prune(engine, saver, settings, keep=0)
    assert rep.threads == 1 and not any(has_checkpoints(t) for t in first.thread_ids)
    assert rep.bytes_after is not None and rep.bytes_after <= rep.bytes_before
    # the store remembers: the same collection again runs nothing and stores nothing twice
    calls = len(rec.calls)
    again = run_collection(graph, "pairs", prompts, CollectContext(part_size=2), **kw)
    assert (again.chunks, again.skipped_chunks, len(rec.calls), len(persisted)) == (3, 3, calls, 3)
    assert again.stored == first.stored
    assert prune(engine, saver, settings, keep=0).threads == 0


def test_fanned_out_collection_on_the_embedded_models(graph_runtime):
    """Parts of one prompt through the real rewrite pipeline: every prompt gets its own candidates."""
    from test_collect import _ctx, _prompts

    rt = graph_runtime
    prompts = _prompts(rt, ["a fox in snow", "rain on a tin roof", "a lighthouse at dusk"])
    ctx = _ctx(rt, 21, n=2, max_refine_steps=0, max_new_tokens=16, part_size=1)
    report = run_collection(rt.collect_graph("pairs"), "pairs", prompts, ctx, round_index=21, batch_size=3,
                            key={"t": "fanout"}, max_concurrency=2)
    assert report.chunks == 1 and report.stored["candidates"] >= 3
    with Session(rt.engine) as s:
        rows = s.exec(select(Candidate).where(Candidate.round_id == ctx.round_id)).all()
        assert {c.prompt_id for c in rows} == {p.id for p in prompts}
        assert all(c.sampling_params["n"] == 2 for c in rows)
        # three parts of one prompt each went through the rewrite subgraph, each its own batched call
        calls = s.exec(select(TraceEvent).where(TraceEvent.thread_id == report.thread_ids[0],
                                                TraceEvent.node == "rewrite")).all()
        assert sorted(e.input["items"] for e in calls) == [1, 1, 1]
        assert sorted(e.output["items"][0]["prompt"] for e in calls) == sorted(p.text for p in prompts)
        assert len({e.input["checkpoint_ns"] for e in calls}) == 3  # each part in its own namespace
