"""The rewrite graph: guard -> rewrite n -> critique -> pick best -> refine (at most k) -> final guard.

State holds a *batch* of items, and every node works on the whole batch, so
the model is called with many conversations at once whether an app rewrites
one prompt or a file of thousands. State is plain JSON (ids, text, numbers):
it checkpoints without custom serializers and resumes in another process.

Run-time settings (model version, n, thresholds, k) come through
``context_schema``; the agents are bound when the graph is built.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from promptloop.agents.critic import Critique, PrincipleCritic, Thresholds
from promptloop.agents.judge import JudgeInput, RewardJudge
from promptloop.agents.llm.base import SamplingParams
from promptloop.agents.rewriter import Rewriter
from promptloop.agents.safety.guard import SafetyGuard, Verdict
from promptloop.errors import is_transient
from promptloop.graphs.tracing import TraceRecorder, traced

GRAPH_NAME = "rewrite"
REFUSAL = "I can't help turn this request into a video prompt: {reason}"


@dataclass
class RewriteContext:
    """Per-run settings (LangGraph ``context_schema``)."""

    model_version: str | None = None  # adapter name of a rewriter version; None = base model
    n: int = 4
    max_refine_steps: int = 2
    harmless_threshold: float = 0.8
    accurate_threshold: float = 0.6
    helpful_threshold: float = 0.6
    max_new_tokens: int = 160
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = 0
    record_traffic: bool = True  # store the prompts as source 'traffic' (what `loop watch` learns from)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(harmless=self.harmless_threshold, accurate=self.accurate_threshold,
                          helpful=self.helpful_threshold)

    def sampling(self, n: int | None = None) -> SamplingParams:
        return SamplingParams(n=n or self.n, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                              top_p=self.top_p, seed=self.seed)


class Item(TypedDict, total=False):
    prompt: str
    verdict: dict
    candidates: list[str]
    critiques: list[dict]
    rewards: list[dict]
    current: str
    current_critique: dict
    current_reward: dict
    steps: int
    trail: list[dict]
    final_prompt: str
    final_verdict: dict
    refused: bool
    reason: str


class RewriteState(TypedDict):
    items: list[Item]


@dataclass
class RewriteAgents:
    guard: SafetyGuard
    rewriter: Rewriter
    critic: PrincipleCritic
    judge: RewardJudge
    recorder: TraceRecorder = field(default_factory=lambda: TraceRecorder(None))


def _active(items: list[Item]) -> list[int]:
    return [i for i, it in enumerate(items) if not it.get("refused")]


def lazy_agents(agents: RewriteAgents | Callable[[], RewriteAgents]) -> Callable[[], RewriteAgents]:
    """A thread-safe getter that builds the agents on first use (or returns the instance given)."""
    if not callable(agents):
        return lambda: agents
    if getattr(agents, "_promptloop_once", False):
        return agents
    provider = agents
    lock = threading.Lock()
    box: list[RewriteAgents] = []

    def get() -> RewriteAgents:
        with lock:
            if not box:
                box.append(provider())
            return box[0]

    get._promptloop_once = True  # type: ignore[attr-defined]
    return get


def build_rewrite_graph(agents: RewriteAgents | Callable[[], RewriteAgents], *, checkpointer: Any = None,
                        name: str = GRAPH_NAME):
    """Compile the graph; pass a checkpointer to make every run a resumable thread.

    ``agents`` may be a zero-argument callable: the agents (and their models)
    are then built on the first node call, in a worker thread, which keeps
    graph construction instant and off a server's event loop.
    """
    get = lazy_agents(agents)

    def guard_input(state: RewriteState, runtime: Runtime[RewriteContext]) -> dict:
        ctx = runtime.context or RewriteContext()
        items = [dict(it) for it in state["items"]]
        if ctx.record_traffic and get().recorder.engine is not None:
            from promptloop.graphs.persist import store_traffic

            store_traffic(get().recorder.engine, [it["prompt"] for it in items])
        for it, v in zip(items, get().guard.check_many([it["prompt"] for it in items]), strict=True):
            it["verdict"] = v.model_dump()
            it["steps"] = 0
            it["trail"] = []
            if v.action == "block":
                it.update(refused=True, reason=v.reason, final_prompt=REFUSAL.format(reason=v.reason))
        return {"items": items}

    def rewrite(state: RewriteState, runtime: Runtime[RewriteContext]) -> dict:
        ctx = runtime.context or RewriteContext()
        items = [dict(it) for it in state["items"]]
        idx = _active(items)
        unsafe = [Verdict.model_validate(items[i]["verdict"]).flagged for i in idx]
        results = get().rewriter.rewrite([items[i]["prompt"] for i in idx], ctx.sampling(), unsafe_categories=unsafe,
                                         adapter=ctx.model_version)
        for i, res in zip(idx, results, strict=True):
            cands = list(dict.fromkeys(c for c in res.candidates if c)) or [items[i]["prompt"]]
            items[i]["candidates"] = cands
        return {"items": items}

    def critique(state: RewriteState) -> dict:
        items = [dict(it) for it in state["items"]]
        idx = _active(items)
        pairs = [(items[i]["prompt"], c) for i in idx for c in items[i]["candidates"]]
        crits = get().critic.critique_many(pairs)
        rewards = get().judge.score_many([JudgeInput(user_prompt=u, candidate=c, critique=k)
                                    for (u, c), k in zip(pairs, crits, strict=True)])
        pos = 0
        for i in idx:
            n = len(items[i]["candidates"])
            items[i]["critiques"] = [k.model_dump() for k in crits[pos:pos + n]]
            items[i]["rewards"] = [r.model_dump() for r in rewards[pos:pos + n]]
            pos += n
        return {"items": items}

    def pick_best(state: RewriteState) -> dict:
        items = [dict(it) for it in state["items"]]
        for i in _active(items):
            it = items[i]
            best = max(range(len(it["candidates"])), key=lambda j: it["rewards"][j]["total"])
            it.update(current=it["candidates"][best], current_critique=it["critiques"][best],
                      current_reward=it["rewards"][best])
            it["trail"] = [*it.get("trail", []), {"step": 0, "text": it["current"], "origin": "sample",
                                                  "reward": it["current_reward"]["total"]}]
        return {"items": items}

    def needs_refine(it: Item, ctx: RewriteContext) -> bool:
        return (not it.get("refused") and it.get("steps", 0) < ctx.max_refine_steps
                and not Critique.model_validate(it["current_critique"]).passes(ctx.thresholds))

    def refine(state: RewriteState, runtime: Runtime[RewriteContext]) -> dict:
        ctx = runtime.context or RewriteContext()
        items = [dict(it) for it in state["items"]]
        idx = [i for i in _active(items) if needs_refine(items[i], ctx)]
        jobs = [(items[i]["prompt"], items[i]["current"], Critique.model_validate(items[i]["current_critique"]))
                for i in idx]
        critic = get().critic
        refined = critic.refine_many(jobs, params=ctx.sampling(n=1), adapter=ctx.model_version)
        crits = critic.critique_many([(items[i]["prompt"], r) for i, r in zip(idx, refined, strict=True)])
        rewards = get().judge.score_many([JudgeInput(user_prompt=items[i]["prompt"], candidate=r, critique=k)
                                    for i, r, k in zip(idx, refined, crits, strict=True)])
        for i, text, k, rw in zip(idx, refined, crits, rewards, strict=True):
            it = items[i]
            it["steps"] = it.get("steps", 0) + 1
            kept = rw.total >= it["current_reward"]["total"]
            it["trail"] = [*it["trail"], {"step": it["steps"], "text": text, "origin": "refine",
                                          "reward": rw.total, "kept": kept}]
            if kept:
                it.update(current=text, current_critique=k.model_dump(), current_reward=rw.model_dump())
                it["candidates"] = [*it["candidates"], text]
                it["critiques"] = [*it["critiques"], k.model_dump()]
                it["rewards"] = [*it["rewards"], rw.model_dump()]
        return {"items": items}

    def route_refine(state: RewriteState, runtime: Runtime[RewriteContext]) -> str:
        ctx = runtime.context or RewriteContext()
        return "refine" if any(needs_refine(it, ctx) for it in state["items"]) else "guard_output"

    def route_after_guard(state: RewriteState) -> str:
        return "rewrite" if _active(state["items"]) else END

    def guard_output(state: RewriteState) -> dict:
        items = [dict(it) for it in state["items"]]
        idx = _active(items)
        # Check every candidate once, so an unsafe best can fall back to the best safe one.
        flat = [(i, j) for i in idx for j in range(len(items[i]["candidates"]))]
        verdicts = get().guard.check_many([items[i]["candidates"][j] for i, j in flat])
        by_item: dict[int, dict[int, Verdict]] = {}
        for (i, j), v in zip(flat, verdicts, strict=True):
            by_item.setdefault(i, {})[j] = v
        for i in idx:
            it = items[i]
            order = sorted(range(len(it["candidates"])), key=lambda j: -it["rewards"][j]["total"])
            cur = it["candidates"].index(it["current"])
            order.remove(cur)
            order.insert(0, cur)
            safe = [j for j in order if by_item[i][j].safe]
            if not safe:
                v = by_item[i][cur]
                it.update(refused=True, reason=f"no safe rewrite: {v.reason}",
                          final_prompt=REFUSAL.format(reason=v.reason), final_verdict=v.model_dump())
                continue
            j = safe[0]
            it.update(final_prompt=it["candidates"][j], final_verdict=by_item[i][j].model_dump(),
                      current=it["candidates"][j], current_critique=it["critiques"][j],
                      current_reward=it["rewards"][j], refused=False,
                      reason="" if j == cur else "best candidate failed the output guard; next safe one used")
        return {"items": items}

    model_retry = RetryPolicy(max_attempts=3, initial_interval=0.5, retry_on=is_transient)
    g = StateGraph(RewriteState, context_schema=RewriteContext)
    def rec() -> TraceRecorder:
        return get().recorder

    g.add_node("guard_input", traced(rec, name, "guard_input", guard_input))
    g.add_node("rewrite", traced(rec, name, "rewrite", rewrite), retry_policy=model_retry)
    g.add_node("critique", traced(rec, name, "critique", critique), retry_policy=model_retry)
    g.add_node("pick_best", traced(rec, name, "pick_best", pick_best))
    g.add_node("refine", traced(rec, name, "refine", refine), retry_policy=model_retry)
    g.add_node("guard_output", traced(rec, name, "guard_output", guard_output))
    g.add_edge(START, "guard_input")
    g.add_conditional_edges("guard_input", route_after_guard, ["rewrite", END])
    g.add_edge("rewrite", "critique")
    g.add_edge("critique", "pick_best")
    g.add_conditional_edges("pick_best", route_refine, ["refine", "guard_output"])
    g.add_conditional_edges("refine", route_refine, ["refine", "guard_output"])
    g.add_edge("guard_output", END)
    return g.compile(checkpointer=checkpointer, name=name)


def _served_agents() -> RewriteAgents:
    from promptloop.config import Settings
    from promptloop.runtime import Runtime as PLRuntime

    return PLRuntime(Settings()).rewrite_agents(default_version="champion")


@functools.cache
def _served_graph():  # noqa: ANN202
    return build_rewrite_graph(_served_agents)


def make_graph():  # noqa: ANN201
    """Entry for `langgraph dev` / LangGraph server (langgraph.json).

    The server supplies persistence, so the graph is compiled without a
    checkpointer; it is built once per server process (models load once) and
    reused for every run, whatever the server's factory semantics.
    """
    return _served_graph()
