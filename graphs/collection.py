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

import functools
import hashlib
import json
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import InstanceOf
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.agents.video.feedback import VideoFeedback
from promptloop.config import CollectSettings, Settings, VideoSettings, default_of
from promptloop.errors import PromptloopError
from promptloop.graphs.rewrite import Item, RewriteAgents, RewriteContext, build_rewrite_graph, lazy_agents
from promptloop.graphs.tracing import graph_node
from promptloop.store.models import Prompt
from promptloop.store.repository import ensure_round, select_prompts
from promptloop.store.threads import finished_result, record_finished


@dataclass
class CollectContext(RewriteContext):
    """RewriteContext plus where the rows go (and the store and video feedback they go through)."""

    engine: SkipJsonSchema[InstanceOf[Engine] | None] = None  # the store persist writes to (build_collect_graph)
    video_feedback: SkipJsonSchema[Callable[[], VideoFeedback] | None] = None  # built and used only with ``video``
    round_id: int | None = None
    model_version_id: int | None = None
    margin: float = 0.1
    rule: str = "margin"
    length_ratio: float = default_of(CollectSettings, "length_ratio")  # chosen this much longer must win on intent
    max_pairs_per_prompt: int = 1
    teacher: str | None = None  # a teacher collection: its name (the SFT source is teacher:NAME)
    record_traffic: bool = False  # collection reads prompts from the store; they are not app traffic
    part_size: int = default_of(CollectSettings, "part_size")  # prompts per part (one batched pipeline pass)
    video: bool = False  # render candidates and add video-level feedback (collect pairs --video)
    video_seeds: int = default_of(VideoSettings, "seeds")  # renders per candidate; dimensions are their mean
    video_seed: int = 0  # first render seed
    video_share: float = default_of(VideoSettings, "share")  # video total's weight in the combined reward

    def sampling_record(self) -> dict:
        """How candidates were sampled, stored with each one as provenance."""
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                "max_new_tokens": self.max_new_tokens, **self.controls.model_dump()}


class CollectState(TypedDict, total=False):
    items: list[Item]
    prompt_ids: list[int]
    parts: Annotated[list[dict], operator.add]  # what each fanned-out part returned, gathered by offset
    stored: dict[str, int]


class PartState(TypedDict):
    offset: int
    items: list[Item]


PersistFn = Callable[[Engine, list[Item], list[int], CollectContext], dict[str, int]]
PART_NODE = "part"


def fan_out(state: CollectState, runtime: Runtime[CollectContext]) -> list[Send]:
    """One ``Send`` per slice of ``part_size`` prompts; the run's max_concurrency bounds those in flight."""
    items, size = state["items"], max(1, runtime.context.part_size)
    return [Send(PART_NODE, {"offset": a, "items": items[a:a + size]}) for a in range(0, len(items), size)]


def part(state: PartState, runtime: Runtime[CollectContext], *, pipeline: Any) -> dict:
    """Run the pipeline (a subgraph) over one slice; every model call inside is batched over it."""
    out = pipeline.invoke({"items": state["items"]}, context=runtime.context)
    return {"parts": [{"offset": state["offset"], "items": out["items"]}]}


def gather(state: CollectState, runtime: Runtime[CollectContext] | None = None) -> dict:
    """Put the parts back in prompt order; a missing part is an error, never a silent drop."""
    parts = sorted(state.get("parts", []), key=lambda p: p["offset"])
    items = [it for p in parts for it in p["items"]]
    if len(items) != len(state["items"]):
        raise RuntimeError(f"gathered {len(items)} items from {len(parts)} part(s), expected {len(state['items'])}")
    return {"items": items}


def video(state: CollectState, runtime: Runtime[CollectContext]) -> dict:
    """With ``video`` on: render every candidate and fold video-level feedback into its reward."""
    ctx = runtime.context
    if not ctx.video:
        return {}
    if ctx.video_feedback is None:
        raise PromptloopError("this collection graph was built without a video renderer; video feedback is "
                              "unavailable")
    return {"items": ctx.video_feedback().apply(state["items"], seeds=ctx.video_seeds, base_seed=ctx.video_seed,
                                              share=ctx.video_share)}


def persist(state: CollectState, runtime: Runtime[CollectContext], *, save: PersistFn) -> dict:
    """Write the chunk's rows (idempotent: content-hash keys) and report what was new."""
    if runtime.context.engine is None:
        raise PromptloopError("the collection graph needs the store: build it with build_collect_graph(..., engine)")
    return {"stored": save(runtime.context.engine, state["items"], state["prompt_ids"], runtime.context)}


def build_collect_graph(name: str, agents: RewriteAgents | Callable[[], RewriteAgents] | None,
                        engine: Engine | None, save: PersistFn, *, pipeline: Any = None,
                        context_schema: type = CollectContext, checkpointer: Any = None,
                        video_feedback: Callable[[], VideoFeedback] | None = None) -> CompiledStateGraph:
    """fan out -> part (``pipeline`` per part, in parallel) -> gather -> video -> persist.

    Each part runs ``pipeline`` (default: the rewrite graph) as a subgraph
    over its slice. A part that finished before a crash is kept in the
    checkpoint as that step's write: a resumed chunk re-runs only the parts
    that had not. ``agents``, ``engine`` and ``video_feedback`` (a provider,
    called only when a run asks for video) fill the context of runs that
    bring none.
    """
    deps: dict[str, Callable[[], Any]] = {}
    if agents is not None:
        deps["agents"] = lazy_agents(agents)  # one set of agents for the subgraph and the persist node
    if engine is not None:
        deps["engine"] = lambda: engine
    pipeline = pipeline or build_rewrite_graph(name=f"{name}.rewrite")  # inherits the parent's checkpointer

    def bound(node: str, fn: Callable, *, trace: bool = True, **deps_extra: Callable[[], Any]) -> Callable:
        return graph_node(name, node, fn, context_type=context_schema, trace=trace, **deps, **deps_extra)

    g = StateGraph(CollectState, context_schema=context_schema)
    g.add_node(PART_NODE, bound(PART_NODE, functools.partial(part, pipeline=pipeline), trace=False))
    g.add_node("gather", bound("gather", gather, trace=False))
    g.add_node("video", bound("video", video, **({"video_feedback": lambda: video_feedback}
                                                  if video_feedback else {})))
    g.add_node("persist", bound("persist", functools.partial(persist, save=save)))
    g.add_conditional_edges(START, fan_out, [PART_NODE])
    g.add_edge(PART_NODE, "gather")
    g.add_edge("gather", "video")
    g.add_edge("video", "persist")
    g.add_edge("persist", END)
    return g.compile(checkpointer=checkpointer, name=name)


@dataclass
class TeacherPlan:
    """Where a collection's teacher rewrites come from, and whether the student samples too.

    ``given`` (prompt id -> rewrites) is a recorded set; without it the
    served teacher (``RewriteAgents.teacher``) samples n per prompt.
    ``student`` adds the rewriter's own n samples (teacher pairs).
    """

    name: str
    given: dict[int, list[str]] | None = None
    student: bool = False

    def context(self, kind: str, given: dict[str, Any]) -> dict[str, Any]:
        """The collection's context overrides under this teacher.

        Pairs always take the teacher rule. A recorded row is taken or rejected
        as written unless refinement is asked for: there is no strong model to
        refine it, and the 135M rewriter's refinements replaced 5 of the 6
        GPT-4o rewrites they touched with meta text (16 vbench-train prompts).
        """
        defaults = {"max_refine_steps": 0} if self.given is not None else {}
        return {**defaults, **given, **({"rule": "teacher"} if kind == "pairs" else {})}

    def item(self, prompt_id: int) -> dict:
        extra: dict = {"sample": self.student}
        if self.given is None:
            extra["teach"] = True
        else:
            extra["given"] = list(self.given.get(prompt_id, []))
        return extra


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


# What each collection counts as found: the stored-rows key its progress shows
FOUND = {"pairs": "pairs", "sft": "accepted", "evolve": "sft_evolve"}


def run_collection(graph: CompiledStateGraph, kind: str, prompts: list[Prompt], ctx: CollectContext, *,
                   round_index: int,
                   batch_size: int, key: dict, on_chunk: Callable[[int, dict], None] | None = None,
                   engine: Engine | None = None, worker: str | None = None, wait: bool = False,
                   lease_s: float = 1800.0, poll_s: float = 2.0, max_concurrency: int | None = None,
                   teacher: TeacherPlan | None = None) -> CollectionReport:
    """Run ``graph`` over ``prompts`` in checkpointed chunks; safe to kill and start again.

    ``on_chunk(prompts_done, rows_stored)`` is called as each fanned-out part
    finishes (rows 0) and when its chunk is stored. With ``worker`` set, the
    prompts become a shared job in the store and this process claims chunks
    of it, so several workers (processes or machines on one PostgreSQL) split
    a collection without processing a prompt twice; ``wait`` keeps polling
    until every prompt of the job is done by someone.
    """
    report = CollectionReport(kind=kind, round_index=round_index, prompts=len(prompts))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def stream(inp: dict | None, config: dict) -> dict:
        """Invoke, reporting each part as it finishes; returns what was stored."""
        done, final = 0, {}
        for mode, chunk in graph.stream(inp, config, context=ctx, stream_mode=["updates", "values"]):
            if mode == "values":
                final = chunk
            elif on_chunk and chunk.get(PART_NODE):
                n = sum(len(p["items"]) for p in chunk[PART_NODE].get("parts", []))
                done += n
                on_chunk(n, {})
        return {"stored": final.get("stored", {}), "reported": done}

    def run_chunk(chunk: list[Prompt], thread_id: str) -> None:
        config = {"configurable": {"thread_id": thread_id, "run_id": thread_id}}
        if max_concurrency:
            config["max_concurrency"] = max_concurrency
        report.chunks += 1
        report.thread_ids.append(thread_id)
        recorded = finished_result(engine, thread_id) if engine is not None else None
        snapshot = graph.get_state(config) if recorded is None else None
        if recorded is not None:  # finished before, checkpoints kept or pruned: the store says so
            report.skipped_chunks += 1
            out = {"stored": recorded.get("stored", {}), "reported": 0}
        elif snapshot.values and not snapshot.next:
            report.skipped_chunks += 1
            out = {"stored": snapshot.values.get("stored", {}), "reported": 0}
        elif snapshot.values:
            report.resumed_chunks += 1
            out = stream(None, config)
        else:
            out = stream({"items": [{"prompt": p.text, **(teacher.item(p.id) if teacher else {})} for p in chunk],
                          "prompt_ids": [p.id for p in chunk]}, config)
        if engine is not None and recorded is None:
            record_finished(engine, thread_id, "collect", {"kind": kind, "stored": out["stored"]})
        for k, v in out["stored"].items():
            report.stored[k] = report.stored.get(k, 0) + v
        if on_chunk:
            on_chunk(max(0, len(chunk) - out["reported"]), out["stored"])

    if worker is None:
        for c, start in enumerate(range(0, len(prompts), batch_size)):
            run_chunk(prompts[start:start + batch_size], f"{kind}-r{round_index}-{digest}-{c:05d}")
        return report

    import time

    from promptloop.store import claims

    if engine is None:
        raise ValueError("a shared collection (worker=...) needs the store's engine")
    job = f"{kind}-r{round_index}-{digest}"
    claims.enqueue(engine, job, [p.id for p in prompts], adapter=ctx.model_version)
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


def collect(graph: CompiledStateGraph, kind: str, *, engine: Engine, settings: Settings, adapter: str | None,
            version_id: int, split: str = "train", limit: int | None = None, round_index: int = 0,
            n: int | None = None, batch_size: int | None = None, prompts: list[Prompt] | None = None,
            source: str | None = None, key_extra: dict | None = None,
            on_chunk: Callable[[int, dict], None] | None = None, worker: str | None = None, wait: bool = False,
            max_concurrency: int | None = None, teacher: TeacherPlan | None = None,
            **overrides: Any) -> CollectionReport:
    """Run collection ``kind`` ('sft', 'pairs', 'evolve') for a round over ``graph`` (built for that kind).

    ``adapter`` is the sampling rewriter version's loaded adapter (None = base
    model) and ``version_id`` its store id. The checkpoint key is built from
    the arguments, so the same call after a kill resumes; ``overrides`` are
    context fields (None = the setting). ``batch_size`` (prompts per
    checkpointed chunk) and ``max_concurrency`` (parts in flight) default to
    the ``[collect]`` settings. ``teacher`` makes it a teacher collection (TeacherPlan).
    """
    prompts = prompts if prompts is not None else select_prompts(engine, split, limit, source)
    round_id = ensure_round(engine, round_index)
    given = {k: v for k, v in overrides.items() if v is not None}
    if teacher:
        given = teacher.context(kind, given)
    n = n or settings.generation.n
    if kind == "pairs" and n < 2:
        raise PromptloopError(f"preference pairs need at least 2 candidates per prompt, n is {n} (generation.n)")
    batch_size = batch_size or settings.collect.chunk_size
    base = vars(RewriteContext.from_settings(settings, model_version=adapter, n=n)) | {
        "record_traffic": False, "part_size": settings.collect.part_size, "length_ratio": settings.collect.length_ratio}
    if kind == "pairs":
        base |= {"video_seeds": settings.video.seeds, "video_share": settings.video.share,
                 "video_seed": settings.seed, "unsanitized_samples": settings.collect.unsanitized_samples}
    context_cls = graph.context_schema or CollectContext  # EvolveContext for the evolution graph
    cctx = context_cls(**{**base, **given}, round_id=round_id, model_version_id=version_id,
                       teacher=teacher.name if teacher else None)
    if teacher:
        given["teacher"] = {"name": teacher.name, "recorded": teacher.given is not None, "student": teacher.student}
    key = {"kind": kind, "split": split, "limit": limit, "round": round_index, "n": n,
           "version": adapter or "base", "batch": batch_size, **given, "part_size": cctx.part_size,
           "controls": cctx.controls.model_dump(), "length_ratio": cctx.length_ratio,
           "unsanitized": cctx.unsanitized_samples,
           **(key_extra or {})}
    return run_collection(graph, kind, prompts, cctx, round_index=round_index, batch_size=batch_size, key=key,
                          on_chunk=on_chunk, engine=engine, worker=worker, wait=wait,
                          max_concurrency=max_concurrency or settings.collect.max_concurrency, teacher=teacher)
