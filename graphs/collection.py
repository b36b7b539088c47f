"""Shared machinery of the data-collection graphs: the graph shape and the resumable driver.

A collection graph is the rewrite graph (as a subgraph, so guard, sampling,
critique and refinement are the same code apps run) followed by a persist
node that writes the collection's rows to the store. The driver cuts the
prompts into chunks; each chunk is one checkpointed thread with an id derived
from the collection's arguments, so starting a killed collection again with
the same arguments skips finished chunks, resumes the interrupted one from
its last checkpoint, and the store's content hashes keep every row unique.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.graphs.rewrite import Item, RewriteAgents, RewriteContext, build_rewrite_graph, lazy_agents
from promptloop.graphs.tracing import traced
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import ModelVersion, Prompt, Round, VersionStatus


@dataclass
class CollectContext(RewriteContext):
    """RewriteContext plus where the rows go."""

    round_id: int | None = None
    model_version_id: int | None = None
    margin: float = 0.1
    rule: str = "margin"
    max_pairs_per_prompt: int = 1
    record_traffic: bool = False  # collection reads prompts from the store; they are not app traffic
    video: bool = False  # render candidates and add video-level feedback (collect pairs --video)
    video_seeds: int = 1  # renders per candidate; its video dimensions are the mean over them
    video_seed: int = 0  # first render seed
    video_share: float = 0.5  # video total's weight in the combined reward

    def sampling_record(self) -> dict:
        """How candidates were sampled, stored with each one as provenance."""
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                "max_new_tokens": self.max_new_tokens}


class CollectState(TypedDict, total=False):
    items: list[Item]
    prompt_ids: list[int]
    stored: dict[str, int]


PersistFn = Callable[[Engine, list[Item], list[int], CollectContext], dict[str, int]]


def build_collect_graph(name: str, agents: RewriteAgents | Callable[[], RewriteAgents], engine: Engine,
                        persist: PersistFn, *, checkpointer: Any = None, video: Callable[[], Any] | None = None):
    """``video``: a zero-argument callable giving the VideoFeedback (built only when a run asks for video)."""
    get = lazy_agents(agents)  # one set of agents for the subgraph and the persist node
    inner = build_rewrite_graph(get, name=f"{name}.rewrite")  # inherits the parent's checkpointer

    def video_node(state: CollectState, runtime: Runtime[CollectContext]) -> dict:
        ctx = runtime.context
        if not ctx.video:
            return {}
        if video is None:
            from promptloop.errors import PromptloopError

            raise PromptloopError(f"{name} was built without a video renderer; video feedback is unavailable")
        return {"items": video().apply(state["items"], seeds=ctx.video_seeds, base_seed=ctx.video_seed,
                                       share=ctx.video_share)}

    def persist_node(state: CollectState, runtime: Runtime[CollectContext]) -> dict:
        return {"stored": persist(engine, state["items"], state["prompt_ids"], runtime.context)}

    g = StateGraph(CollectState, context_schema=CollectContext)
    g.add_node("rewrite", inner)
    g.add_node("video", traced(lambda: get().recorder, name, "video", video_node))
    g.add_node("persist", traced(lambda: get().recorder, name, "persist", persist_node))
    g.add_edge(START, "rewrite")
    g.add_edge("rewrite", "video")
    g.add_edge("video", "persist")
    g.add_edge("persist", END)
    return g.compile(checkpointer=checkpointer, name=name)


@dataclass
class CollectionReport:
    kind: str
    round_index: int
    prompts: int = 0
    chunks: int = 0
    skipped_chunks: int = 0
    resumed_chunks: int = 0
    stored: dict[str, int] = field(default_factory=dict)
    thread_ids: list[str] = field(default_factory=list)


def ensure_round(engine: Engine, index: int) -> int:
    with session_scope(engine) as s:
        row, _ = repo.get_or_insert(s, Round, Round.index == index, index=index, stage="collect")
        return row.id


def ensure_version(engine: Engine, name: str | None, base_model: str) -> int:
    """The store id of a rewriter version; the base model is registered on first use."""
    with session_scope(engine) as s:
        if name in (None, "base"):
            row, _ = repo.get_or_create_version(s, "base", base_model=base_model, algorithm="base",
                                                status=VersionStatus.champion)
            return row.id
        row = s.exec(select(ModelVersion).where(ModelVersion.name == name)).first()
        if row is None:
            from promptloop.errors import PromptloopError

            raise PromptloopError(f"unknown model version '{name}'")
        return row.id


def select_prompts(engine: Engine, split: str, limit: int | None, source: str | None = None) -> list[Prompt]:
    q = select(Prompt).where(Prompt.split == split).order_by(Prompt.id)
    if source:
        q = q.where(Prompt.source == source)
    if limit:
        q = q.limit(limit)
    with Session(engine) as s:
        rows = list(s.exec(q))
    if not rows:
        from promptloop.errors import PromptloopError

        raise PromptloopError(f"no prompts in split '{split}'" + (f" from source '{source}'" if source else "")
                              + "; run `promptloop init` or `promptloop prompts import`")
    return rows


def run_collection(graph, kind: str, prompts: list[Prompt], ctx: CollectContext, *, round_index: int,  # noqa: ANN001
                   batch_size: int, key: dict, on_chunk: Callable[[int, dict], None] | None = None,
                   engine: Engine | None = None, worker: str | None = None, wait: bool = False,
                   lease_s: float = 1800.0, poll_s: float = 2.0) -> CollectionReport:
    """Run ``graph`` over ``prompts`` in checkpointed chunks; safe to kill and start again.

    With ``worker`` set, the prompts become a shared job in the store and this
    process claims chunks of it, so several workers (processes or machines on
    one PostgreSQL) split a collection without processing a prompt twice;
    ``wait`` keeps polling until every prompt of the job is done by someone.
    """
    report = CollectionReport(kind=kind, round_index=round_index, prompts=len(prompts))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def run_chunk(chunk: list[Prompt], thread_id: str) -> None:
        config = {"configurable": {"thread_id": thread_id, "run_id": thread_id}}
        report.chunks += 1
        report.thread_ids.append(thread_id)
        snapshot = graph.get_state(config)
        if snapshot.values and not snapshot.next:
            report.skipped_chunks += 1
            stored = snapshot.values.get("stored", {})
        elif snapshot.values:
            report.resumed_chunks += 1
            stored = graph.invoke(None, config, context=ctx).get("stored", {})
        else:
            state = {"items": [{"prompt": p.text} for p in chunk], "prompt_ids": [p.id for p in chunk]}
            stored = graph.invoke(state, config, context=ctx).get("stored", {})
        for k, v in stored.items():
            report.stored[k] = report.stored.get(k, 0) + v
        if on_chunk:
            on_chunk(len(chunk), stored)

    if worker is None:
        for c, start in enumerate(range(0, len(prompts), batch_size)):
            run_chunk(prompts[start:start + batch_size], f"{kind}-r{round_index}-{digest}-{c:05d}")
        return report

    import time

    from promptloop.store import claims

    if engine is None:
        raise ValueError("a shared collection (worker=...) needs the store's engine")
    job = f"{kind}-r{round_index}-{digest}"
    claims.enqueue(engine, job, [p.id for p in prompts])
    by_id = {p.id: p for p in prompts}
    report.prompts = 0  # counts what this worker processed
    while True:
        ids = claims.claim(engine, job, worker, batch_size, lease_s=lease_s)
        if ids:
            missing = [i for i in ids if i not in by_id]
            if missing:  # a worker started with other arguments enqueued them; read them from the store
                with Session(engine) as s:
                    by_id.update({p.id: p for p in s.exec(select(Prompt).where(Prompt.id.in_(missing)))})
            chunk_digest = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:10]
            run_chunk([by_id[i] for i in ids], f"{job}-{chunk_digest}")
            claims.complete(engine, job, worker, ids)
            report.prompts += len(ids)
            continue
        state = claims.progress(engine, job)
        if not wait or not (state.get("pending") or state.get("claimed")):
            return report
        time.sleep(poll_s)


def collect(rt, kind: str, *, split: str = "train", limit: int | None = None, round_index: int = 0, n: int = 4,  # noqa: ANN001
            model_version: str = "base", batch_size: int = 16, prompts: list[Prompt] | None = None,
            source: str | None = None, key_extra: dict | None = None,
            on_chunk: Callable[[int, dict], None] | None = None, worker: str | None = None, wait: bool = False,
            **overrides) -> CollectionReport:
    """Run collection ``kind`` ('sft', 'pairs', 'evolve') for a round: the CLI's and the loop's entry point.

    The checkpoint key is built from the arguments, so the same call after a
    kill resumes; ``overrides`` are context fields (None = the setting).
    """
    from promptloop.graphs.evolve import EvolveContext

    rt.upgrade_db()
    prompts = prompts if prompts is not None else select_prompts(rt.engine, split, limit, source)
    adapter = rt.resolve_model_version(model_version)
    round_id = ensure_round(rt.engine, round_index)
    version_id = ensure_version(rt.engine, adapter if adapter else "base", rt.settings.base_model)
    given = {k: v for k, v in overrides.items() if v is not None}
    base = vars(rt.rewrite_context(model_version=adapter, n=n)) | {"record_traffic": False}
    if kind == "pairs":
        base |= {"video_seeds": rt.settings.video.seeds, "video_share": rt.settings.video.share,
                 "video_seed": rt.settings.seed}
    context_cls = EvolveContext if kind == "evolve" else CollectContext
    cctx = context_cls(**{**base, **given}, round_id=round_id, model_version_id=version_id)
    key = {"kind": kind, "split": split, "limit": limit, "round": round_index, "n": n,
           "version": adapter or "base", "batch": batch_size, **given, **(key_extra or {})}
    return run_collection(rt.collect_graph(kind), kind, prompts, cctx, round_index=round_index,
                          batch_size=batch_size, key=key, on_chunk=on_chunk, engine=rt.engine, worker=worker,
                          wait=wait)
