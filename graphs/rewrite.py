"""The rewrite graph: guard -> rewrite n -> critique -> pick best -> refine (at most k) -> final guard.

State holds a *batch* of items, and every node works on the whole batch, so
the model is called with many conversations at once whether an app rewrites
one prompt or a file of thousands. State is plain JSON (ids, text, numbers):
it checkpoints without custom serializers and resumes in another process.

Nodes are module-level functions of ``(state, runtime: Runtime[RewriteContext])``
as in LangGraph's templates: the run's settings *and* its agents (run
dependencies) come through the context, so each node can be called alone.
``build_rewrite_graph(agents)`` binds agents for callers that pass none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy
from pydantic import InstanceOf
from pydantic.json_schema import SkipJsonSchema

from promptloop.agents.judge import JudgeInput, RewardJudge
from promptloop.agents.llm.base import SamplingParams
from promptloop.agents.rewriter import Rewriter
from promptloop.agents.safety.guard import SafetyGuard, Verdict, refusal_message
from promptloop.agents.safety.injection import injection_family
from promptloop.agents.safety.sanitizer import Screened, plain_expansion, screen, trim_output
from promptloop.agents.text_critic import Critique, TextCritic, Thresholds
from promptloop.config import (
    CriticSettings,
    GenerationSettings,
    SamplingControls,
    SamplingSettings,
    Settings,
    TrafficSettings,
    default_of,
)
from promptloop.errors import PromptloopError, is_transient
from promptloop.graphs.tracing import TraceRecorder, graph_node

GRAPH_NAME = "rewrite"
_REWRITER = SamplingSettings().rewriter  # the rewriter's default decoding controls


@dataclass
class RewriteAgents:
    guard: SafetyGuard
    rewriter: Rewriter
    critic: TextCritic
    judge: RewardJudge
    recorder: TraceRecorder = field(default_factory=lambda: TraceRecorder(None))
    teacher: Rewriter | None = None  # a served teacher: samples for items marked ``teach`` (collect --teacher)


@dataclass
class RewriteContext:
    """Per-run settings and dependencies (LangGraph ``context_schema``); defaults are Settings' defaults."""

    # run dependency, filled in by build_rewrite_graph(agents) when a run passes none; not part of the JSON
    # schema a LangGraph server publishes for the context (clients send settings, never agents)
    agents: SkipJsonSchema[InstanceOf[RewriteAgents] | None] = None
    model_version: str | None = None  # adapter name of a rewriter version; None = base model
    n: int = default_of(GenerationSettings, "n")
    max_refine_steps: int = default_of(CriticSettings, "max_refine_steps")
    harmless_threshold: float = default_of(CriticSettings, "harmless_threshold")
    accurate_threshold: float = default_of(CriticSettings, "accurate_threshold")
    helpful_threshold: float = default_of(CriticSettings, "helpful_threshold")
    max_new_tokens: int = default_of(GenerationSettings, "max_new_tokens")
    temperature: float = default_of(GenerationSettings, "temperature")
    top_p: float = default_of(GenerationSettings, "top_p")
    top_k: int = _REWRITER.top_k
    min_p: float = _REWRITER.min_p
    repetition_penalty: float = _REWRITER.repetition_penalty
    no_repeat_ngram_size: int = _REWRITER.no_repeat_ngram_size
    stop: list[str] = field(default_factory=lambda: list(_REWRITER.stop))
    seed: int | None = default_of(Settings, "seed")
    record_traffic: bool = default_of(Settings, "record_traffic")  # store prompts as source 'traffic'
    client: str = "local"  # who sent the prompts: the per-client quota of `loop watch` counts by it
    injection_check: bool = default_of(TrafficSettings, "injection_check")  # quarantine injections in traffic
    # pair collection: rewrites of a sanitised request *as the user wrote it*, kept where the output guard fails
    # them: the rejected side of a safety pair (graphs/collect_pairs.py). 0 in apps: nothing extra is sampled.
    unsanitized_samples: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RewriteContext:
        """The context a run gets from Settings; ``overrides`` that are None keep the setting."""
        g, c = settings.generation, settings.critic
        base = dict(**settings.sampling.rewriter.model_dump(),
                    n=g.n, max_refine_steps=c.max_refine_steps, harmless_threshold=c.harmless_threshold,
                    accurate_threshold=c.accurate_threshold, helpful_threshold=c.helpful_threshold,
                    max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, seed=settings.seed,
                    record_traffic=settings.record_traffic, injection_check=settings.traffic.injection_check)
        known = {f.name for f in fields(cls)}
        base.update({k: v for k, v in overrides.items() if v is not None and k in known})
        return cls(**base)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(harmless=self.harmless_threshold, accurate=self.accurate_threshold,
                          helpful=self.helpful_threshold)

    @property
    def controls(self) -> SamplingControls:
        """The run's decoding controls (the context keeps them flat, as a server's context schema shows them)."""
        return SamplingControls(**{f: getattr(self, f) for f in SamplingControls.model_fields})

    def sampling(self, n: int | None = None) -> SamplingParams:
        return SamplingParams.of(self.controls, n=n or self.n, max_new_tokens=self.max_new_tokens,
                                 temperature=self.temperature, top_p=self.top_p, seed=self.seed)


class Item(TypedDict, total=False):
    prompt: str
    core: str  # what the rewriter expands and the critic judges against: the prompt, or its benign core
    removed: list[str]  # the stretches the sanitiser cut from the prompt (trace only)
    unsafe_rewrites: list[str]  # rewrites of the raw request that fail the guard (unsanitized_samples)
    given: list[str]  # candidates written elsewhere (a teacher), scored like samples; never re-sampled
    sample: bool  # the rewriter samples n candidates for this item (default True)
    teach: bool  # the served teacher (RewriteAgents.teacher) samples n more, added to ``given``
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
    fallback: str  # "trimmed" | "core": the final prompt is not a candidate as the critic judged it
    reason: str


class RewriteState(TypedDict):
    items: list[Item]


def _active(items: list[Item]) -> list[int]:
    return [i for i, it in enumerate(items) if not it.get("refused")]


def agents_of(runtime: Runtime[RewriteContext]) -> RewriteAgents:
    agents = runtime.context.agents if runtime.context is not None else None
    if agents is None:
        raise PromptloopError("the rewrite graph needs its agents: build it with build_rewrite_graph(agents) or "
                              "run it with context=RewriteContext(agents=...)")
    return agents


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


def traffic_refusal(prompt: str, verdict: Verdict, injection_check: bool) -> str | None:
    """Why an app's prompt may not become training data (None: it may): it reads as instructions to the
    model, or the guard did not pass it as it is. Such prompts are still answered; they are only kept out of
    the training pool (split quarantine, with this reason). An injection is named first: its pattern family
    is fixed, while the guard's reason carries trained scores that move with the detector."""
    if injection_check:
        family = injection_family(prompt)
        if family is not None:
            return f"prompt injection ({family})"
    if verdict.action != "allow":
        return f"guard {verdict.action}: {verdict.reason or ', '.join(verdict.flagged)}"
    return None


def guard_input(state: RewriteState, runtime: Runtime[RewriteContext]) -> dict:
    """Screen every prompt: an allowed one goes on as it is, a flagged one as its benign core (the sanitiser
    cuts the spans that carry the harm), and one with nothing benign left ends here as a refusal an app can
    show its user. Scores and removed spans stay in the item's verdict (the trace), never in the refusal."""
    ctx, agents = runtime.context, agents_of(runtime)
    items = [dict(it) for it in state["items"]]
    screened = screen(agents.guard, [it["prompt"] for it in items])
    if ctx.record_traffic and agents.recorder.engine is not None:
        from promptloop.store.repository import store_traffic

        store_traffic(agents.recorder.engine, [(it["prompt"], traffic_refusal(it["prompt"], s.verdict,
                                                                              ctx.injection_check))
                                               for it, s in zip(items, screened, strict=True)], client=ctx.client)
    for it, s in zip(items, screened, strict=True):
        it.update(steps=0, trail=[])
        apply_screen(it, s)
    return {"items": items}


def apply_screen(it: dict, s: Screened) -> None:
    """The item fields a screened prompt sets: its verdict and cut spans, then either the refusal an app shows
    or the core the rewriter expands (guard_input here, the evolution graph's seed)."""
    it.update(verdict=s.verdict.model_dump(), removed=s.removed)
    if s.refused:
        it.update(refused=True, reason=s.verdict.reason, final_prompt=s.refusal)
    else:
        it["core"] = s.core or it["prompt"]


def target_of(it: Item) -> str:
    """The request a candidate is written for and judged against: the benign core of a sanitised prompt."""
    return it.get("core") or it["prompt"]


def _sample(rewriter: Rewriter, items: list[Item], idx: list[int], ctx: RewriteContext, adapter: str | None
            ) -> dict[int, list[str]]:
    if not idx:
        return {}
    results = rewriter.rewrite([target_of(items[i]) for i in idx], ctx.sampling(), adapter=adapter)
    return {i: res.candidates for i, res in zip(idx, results, strict=True)}


def rewrite(state: RewriteState, runtime: Runtime[RewriteContext]) -> dict:
    """n candidates per prompt (of its benign core, where the guard cut something) in one batched model call.

    Candidates an item brings (``given``, a recorded teacher's) and a served
    teacher's samples (``teach``) join the rewriter's own and go through the
    same critique, refinement and guard.
    """
    ctx, agents = runtime.context, agents_of(runtime)
    items = [dict(it) for it in state["items"]]
    active = _active(items)
    teach = [i for i in active if items[i].get("teach")]
    if teach and agents.teacher is None:
        raise PromptloopError("items ask for a served teacher but the graph's agents have none "
                              "(set backends.teacher)")
    taught = _sample(agents.teacher, items, teach, ctx, None) if teach else {}
    own = _sample(agents.rewriter, items, [i for i in active if items[i].get("sample", True)], ctx,
                  ctx.model_version)
    if ctx.unsanitized_samples:
        _unsanitized(agents, items, [i for i in active if target_of(items[i]) != items[i]["prompt"]], ctx)
    for i in active:
        given = list(dict.fromkeys(c for c in [*items[i].get("given", []), *taught.get(i, [])] if c))
        if given:
            items[i]["given"] = given
        cands = list(dict.fromkeys(c for c in [*given, *own.get(i, [])] if c))
        items[i]["candidates"] = cands or [target_of(items[i])]
    return {"items": items}


def _unsanitized(agents: RewriteAgents, items: list[Item], idx: list[int], ctx: RewriteContext) -> None:
    """What the rewriter writes for the request the sanitiser cut, kept where the guard finds it unsafe."""
    if not idx:
        return
    results = agents.rewriter.rewrite([items[i]["prompt"] for i in idx], ctx.sampling(n=ctx.unsanitized_samples),
                                      adapter=ctx.model_version)
    texts = [list(dict.fromkeys(c for c in r.candidates if c)) for r in results]
    verdicts = iter(agents.guard.check_many([t for ts in texts for t in ts]))
    for i, ts in zip(idx, texts, strict=True):
        items[i]["unsafe_rewrites"] = [t for t in ts if not next(verdicts).safe]


def critique(state: RewriteState, runtime: Runtime[RewriteContext]) -> dict:
    """Critique and reward every candidate of every prompt in one batch."""
    agents = agents_of(runtime)
    items = [dict(it) for it in state["items"]]
    idx = _active(items)
    pairs = [(target_of(items[i]), c) for i in idx for c in items[i]["candidates"]]
    crits = agents.critic.critique_many(pairs)
    rewards = agents.judge.score_many([JudgeInput(user_prompt=u, candidate=c, critique=k)
                                       for (u, c), k in zip(pairs, crits, strict=True)])
    pos = 0
    for i in idx:
        n = len(items[i]["candidates"])
        items[i]["critiques"] = [k.model_dump() for k in crits[pos:pos + n]]
        items[i]["rewards"] = [r.model_dump() for r in rewards[pos:pos + n]]
        pos += n
    return {"items": items}


def pick_best(state: RewriteState, runtime: Runtime[RewriteContext] | None = None) -> dict:
    """The candidate with the highest reward total becomes the current one (trail step 0)."""
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
    """One refine step for every prompt below threshold; a refinement is kept only if its reward is not lower."""
    ctx, agents = runtime.context, agents_of(runtime)
    items = [dict(it) for it in state["items"]]
    idx = [i for i in _active(items) if needs_refine(items[i], ctx)]
    jobs = [(target_of(items[i]), items[i]["current"], Critique.model_validate(items[i]["current_critique"]))
            for i in idx]
    # a served teacher refines its own rewrites (VPO: the strong model critiques and refines)
    teacher_model = agents.teacher.model if agents.teacher is not None else None
    refined = agents.critic.refine_many(jobs, params=ctx.sampling(n=1), adapter=None if teacher_model else
                                        ctx.model_version, model=teacher_model)
    crits = agents.critic.critique_many([(target_of(items[i]), r) for i, r in zip(idx, refined, strict=True)])
    rewards = agents.judge.score_many([JudgeInput(user_prompt=target_of(items[i]), candidate=r, critique=k)
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
    ctx = runtime.context if runtime.context is not None else RewriteContext()
    return "refine" if any(needs_refine(it, ctx) for it in state["items"]) else "guard_output"


def route_after_guard(state: RewriteState) -> str:
    return "rewrite" if _active(state["items"]) else END


def guard_output(state: RewriteState, runtime: Runtime[RewriteContext]) -> dict:
    """The final text must pass the guard, tried in this order: the best candidate, the next safe candidate,
    a candidate without the sentences the guard flagged, the core framed by ``guard.fallback``; else a
    refusal. Only the first two are model rewrites as the critic judged them: ``fallback`` names the others,
    and collection does not train on them."""
    agents = agents_of(runtime)
    cfg = agents.guard.config
    items = [dict(it) for it in state["items"]]
    idx = _active(items)
    # Check every candidate once (sentence by sentence), so an unsafe best can fall back to the best safe one.
    flat = [(i, j) for i in idx for j in range(len(items[i]["candidates"]))]
    verdicts = agents.guard.check_many([items[i]["candidates"][j] for i, j in flat])
    by_item: dict[int, dict[int, Verdict]] = {}
    for (i, j), v in zip(flat, verdicts, strict=True):
        by_item.setdefault(i, {})[j] = v
    orders, unsafe = {}, []
    for i in idx:
        it = items[i]
        order = sorted(range(len(it["candidates"])), key=lambda j: -it["rewards"][j]["total"])
        cur = it["candidates"].index(it["current"])
        order.remove(cur)
        order.insert(0, cur)
        orders[i] = order
        safe = [j for j in order if by_item[i][j].safe]
        if not safe:
            unsafe.append(i)
            continue
        j = safe[0]
        it.update(final_prompt=it["candidates"][j], final_verdict=by_item[i][j].model_dump(),
                  current=it["candidates"][j], current_critique=it["critiques"][j],
                  current_reward=it["rewards"][j], refused=False,
                  reason="" if j == cur else "best candidate failed the output guard; next safe one used")
    # No candidate passed: its flagged sentences cut, or the core as the prompt, each checked again.
    tries: list[tuple[int, str, str]] = []
    for i in unsafe:
        it = items[i]
        for j in orders[i]:
            trimmed = trim_output(it["candidates"][j], by_item[i][j], cfg.trim_min_words)
            if trimmed is not None:
                tries.append((i, trimmed, "trimmed"))
        plain = plain_expansion(target_of(it), cfg.fallback)
        if plain is not None:
            tries.append((i, plain, "core"))
    checked = agents.guard.check_many([t for _, t, _ in tries])
    for i in unsafe:
        it = items[i]
        found = next(((t, kind, v) for (k, t, kind), v in zip(tries, checked, strict=True) if k == i and v.safe),
                     None)
        if found is not None:
            text, kind, v = found
            why = ("no candidate passed the output guard; the best one without its flagged sentences"
                   if kind == "trimmed" else "no candidate passed the output guard; the request's core as the prompt")
            it.update(final_prompt=text, final_verdict=v.model_dump(), refused=False, fallback=kind, reason=why)
            continue
        v = by_item[i][orders[i][0]]
        # the refusal names what the user asked for (the request's flagged harm), not what the model made up
        asked = Verdict.model_validate(it["verdict"]).flagged if it.get("verdict") else []
        it.update(refused=True, reason=f"no safe rewrite: {v.reason}",
                  final_prompt=refusal_message([*asked, *v.flagged]), final_verdict=v.model_dump())
    return {"items": items}


MODEL_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.5, retry_on=is_transient)
# node -> (function, calls a model: retried on transient errors)
NODES: dict[str, tuple[Callable, bool]] = {
    "guard_input": (guard_input, False), "rewrite": (rewrite, True), "critique": (critique, True),
    "pick_best": (pick_best, False), "refine": (refine, True), "guard_output": (guard_output, False),
}


def build_rewrite_graph(agents: RewriteAgents | Callable[[], RewriteAgents] | None = None, *,
                        checkpointer: Any = None, name: str = GRAPH_NAME) -> CompiledStateGraph:
    """Compile the graph; pass a checkpointer to make every run a resumable thread.

    ``agents`` (or a zero-argument callable building them on the first node
    call, in a worker thread: graph construction stays instant and off a
    server's event loop) fill the context of runs that bring none.
    """
    deps = {"agents": lazy_agents(agents)} if agents is not None else {}
    g = StateGraph(RewriteState, context_schema=RewriteContext)
    for node, (fn, calls_model) in NODES.items():
        g.add_node(node, graph_node(name, node, fn, context_type=RewriteContext, **deps),
                   retry_policy=MODEL_RETRY if calls_model else None)
    g.add_edge(START, "guard_input")
    g.add_conditional_edges("guard_input", route_after_guard, ["rewrite", END])
    g.add_edge("rewrite", "critique")
    g.add_edge("critique", "pick_best")
    g.add_conditional_edges("pick_best", route_refine, ["refine", "guard_output"])
    g.add_conditional_edges("refine", route_refine, ["refine", "guard_output"])
    g.add_edge("guard_output", END)
    return g.compile(checkpointer=checkpointer, name=name)


# Module-level graph, as LangGraph's templates have it: agents come with each run's context.
graph = build_rewrite_graph()
