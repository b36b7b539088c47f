"""The self-improvement loop: collect -> train -> evaluate -> promote, round after round.

A LangGraph graph with a checkpointer (one thread per loop name): killing the
loop and starting it again resumes at the stage it stopped in. Each stage is
idempotent on its own, so the re-run stage adds nothing twice: collection
skips finished chunks (checkpointed threads, content hashes), training
reuses a registered version of the same name or resumes from its last
Trainer checkpoint, evaluations are cached by (system, prompts, settings).

The loop's configuration lives in the state, not in the run's context, so a
resumed loop keeps the settings it started with.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from sqlalchemy.engine import Engine

from promptloop.config import PromotionSettings, Settings
from promptloop.errors import PromptloopError
from promptloop.evaluation import gate
from promptloop.evaluation.runner import EvalConfig, EvalReport, load_items
from promptloop.graphs.collection import FOUND, CollectionReport, TeacherPlan
from promptloop.learners.config import LearnerConfig, load_config
from promptloop.learners.data import NothingToTrain
from promptloop.learners.tracking import log_metrics
from promptloop.learners.trainer import OnStep, TrainResult
from promptloop.store.models import Prompt, VersionStatus
from promptloop.store.threads import finished_result, record_finished
from promptloop.store.versions import ensure_base, get_version, set_status

Log = Callable[[str], None]
# A live display of one collection: (description, prompts, what is counted) -> a context yielding on_chunk
CollectionProgress = Callable[[str, int, str], AbstractContextManager[Callable[[int, dict], None]]]
# A live display of one training run: description -> a context yielding on_step(step, total, logs)
TrainingProgress = Callable[[str], AbstractContextManager[OnStep]]
# schedule steps: the plain ones learn from the champion's samples; teacher-sft from the teacher's rewrites,
# teacher-dpo from pairs of the teacher's rewrite (chosen) against the champion's samples (graphs/collect_pairs.py)
STEPS = ("sft", "dpo", "teacher-sft", "teacher-dpo")


@dataclass
class LoopConfig:
    name: str = "main"
    rounds: int = 2
    schedule: list[str] = field(default_factory=lambda: ["sft", "dpo"])  # per round (STEPS); the last one repeats
    start_round: int = 0  # store round index of the loop's first round
    split: str = "train"
    train_limit: int | None = 64
    n: int | None = None  # candidates per prompt; None = generation.n
    batch_size: int | None = None  # prompts per collection chunk; None = collect.chunk_size
    max_refine_steps: int | None = None
    margin: float = 0.1
    rule: str = "margin"
    eval_bench: str = "eval"
    eval_limit: int | None = 32
    redteam_limit: int | None = 12
    sft_config: str | None = None
    dpo_config: str | None = None
    max_steps: int | None = None  # caps training steps (tests, smoke runs)
    min_improvement: float = 0.0  # a round that gains less on the held-out judge total counts as stalled
    patience: int = 1  # stop after this many stalled rounds in a row
    worker: str | None = None  # share collection with `collect --worker` processes (waits for all chunks)
    video_rounds: list[int] = field(default_factory=list)  # 0-based rounds whose pairs get video-level feedback
    teacher: str | None = None  # the teacher of teacher-sft / teacher-dpo steps (recorded set or served)
    teacher_limit: int | None = None  # prompts of a teacher step (None = all a recorded set has, or the split's)

    def __post_init__(self) -> None:
        bad = [s for s in self.schedule if s not in STEPS]
        if bad or not self.schedule:
            raise PromptloopError(f"loop schedule must list one of {', '.join(STEPS)} per round, got "
                                  f"{','.join(self.schedule) or 'nothing'}")
        if self.rounds < 1:
            raise PromptloopError("a loop needs at least one round")
        taught = [s for s in self.schedule if s.startswith("teacher-")]
        if taught and not self.teacher:
            raise PromptloopError(f"the schedule's {taught[0]} step needs a teacher (--teacher NAME: a recorded set "
                                  "or the served backends.teacher)")
        not_dpo = [r for r in self.video_rounds if r < 0 or self.algorithm(r) != "dpo"]
        if not_dpo:
            raise PromptloopError(f"video feedback applies to preference-pair (dpo) rounds; rounds {not_dpo} are not "
                                  f"dpo rounds of the schedule {self.schedule}")

    def step(self, r: int) -> str:
        """Round ``r``'s schedule entry, e.g. 'teacher-sft'."""
        return self.schedule[min(r, len(self.schedule) - 1)]

    def algorithm(self, r: int) -> str:
        """The learner of round ``r``: 'sft' or 'dpo' (a teacher step trains like its plain one)."""
        return self.step(r).removeprefix("teacher-")

    def collection(self, r: int) -> tuple[str, dict]:
        """What round ``r`` collects ('sft' or 'pairs') and the collection's arguments."""
        teacher = {"teacher": self.teacher, "limit": self.teacher_limit} if self.step(r).startswith("teacher-") else {}
        if self.algorithm(r) == "sft":
            return "sft", {"max_refine_steps": self.max_refine_steps, **teacher}
        extra = {"max_refine_steps": 0, "margin": self.margin, "rule": self.rule, **teacher}
        if r in self.video_rounds:
            extra["video"] = True
        return "pairs", extra

    @property
    def thread_id(self) -> str:
        return f"loop-{self.name}"

    def plan(self) -> list[dict]:
        """What each round would do (``loop run --dry-run``): its step, collection, learner and recipe."""
        rows = []
        for r in range(self.rounds):
            kind, extra = self.collection(r)
            algo = self.algorithm(r)
            rows.append({"round": self.start_round + r, "step": self.step(r), "collect": kind,
                         "collect_from": f"teacher:{self.teacher}" if extra.get("teacher") else "champion",
                         "prompts": (self.teacher_limit if extra.get("teacher") else self.train_limit),
                         "video": bool(extra.get("video")), "train": algo,
                         "recipe": (self.sft_config if algo == "sft" else self.dpo_config) or f"defaults ({algo})",
                         "max_steps": self.max_steps, "eval_prompts": self.eval_limit,
                         "redteam_prompts": self.redteam_limit})
        return rows


class LoopState(TypedDict, total=False):
    config: dict
    round: int  # 0-based within the loop
    champion: str
    candidate: str | None
    history: list[dict]  # one row per round: data, training, eval, decision, stage timings
    stalled: int
    done: bool
    stop_reason: str


def _row(state: LoopState) -> dict:
    hist = state.get("history") or []
    r = state["round"]
    return dict(hist[r]) if len(hist) > r else {"round": r, "timings": {}}


def _with_row(state: LoopState, row: dict) -> list[dict]:
    hist = list(state.get("history") or [])
    if len(hist) > row["round"]:
        hist[row["round"]] = row
    else:
        hist.append(row)
    return hist


class LoopDeps(Protocol):
    """What the loop (and ``loop watch``) orchestrates over one store: collection, training, evaluation.

    The composition root satisfies it; graphs never see more than this.
    """

    @property
    def engine(self) -> Engine: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def checkpointer(self) -> Any: ...
    def collect(self, kind: str, **kwargs: Any) -> CollectionReport: ...
    def train(self, algorithm: str, cfg: LearnerConfig, on_step: OnStep | None = None) -> TrainResult: ...
    def evaluate(self, systems: Sequence[str], cfg: EvalConfig, progress: Log | None = None) -> EvalReport: ...
    def pairwise(self, prompts: Sequence[str], candidate: Sequence[str], champion: Sequence[str]) -> dict | None: ...
    def teacher_reference(self, round_index: int) -> dict[str, float]: ...
    def collection_prompts(self, kind: str, *, split: str = "train", limit: int | None = None,
                           teacher: str | None = None) -> tuple[TeacherPlan | None, list[Prompt]]: ...


@dataclass
class LoopContext:
    """The loop's run dependencies (LangGraph ``context_schema``); its settings live in the state."""

    deps: LoopDeps | None = None
    log: Log | None = None
    progress: CollectionProgress | None = None  # a live bar for collections (the CLI's); else a line per part
    train_progress: TrainingProgress | None = None  # a live bar for training; else a line per logged step

    def say(self, message: str) -> None:
        if self.log:
            self.log(message)

    @contextmanager
    def collecting(self, description: str, total: int, found_key: str) -> Iterator[Callable[[int, dict], None]]:
        """The progress of one collection: the live display when there is one, else a line per finished part."""
        if self.progress is not None:
            with self.progress(description, total, found_key) as on_chunk:
                yield on_chunk
            return
        seen = {"done": 0, "found": 0}

        def on_chunk(done: int, stored: dict) -> None:
            seen["done"] += done
            seen["found"] += stored.get(found_key, 0)
            if done:
                self.say(f"  {description}: {seen['done']}/{total} prompts, {seen['found']} {found_key}")

        yield on_chunk

    @contextmanager
    def training(self, description: str) -> Iterator[OnStep]:
        """The progress of one training run: the live display when there is one, else a line per logged loss."""
        if self.train_progress is not None:
            with self.train_progress(description) as on_step:
                yield on_step
            return
        said: set[int] = set()

        def on_step(step: int, total: int, logs: dict) -> None:
            if "loss" in logs and step not in said:
                said.add(step)
                self.say(f"  {description}: step {step}/{total} loss {float(logs['loss']):.4f}")

        yield on_step


def _deps(runtime: Runtime[LoopContext]) -> LoopDeps:
    if runtime.context is None or runtime.context.deps is None:
        raise PromptloopError("the loop graph runs with context=LoopContext(deps=...)")
    return runtime.context.deps


def _cfg(state: LoopState) -> LoopConfig:
    return LoopConfig(**state["config"])


def start(state: LoopState, runtime: Runtime[LoopContext]) -> dict:
    """Register the base model if needed and start from the current champion."""
    deps = _deps(runtime)
    ensure_base(deps.engine, deps.settings.base_model)
    return {"round": 0, "champion": get_version(deps.engine, "champion").name, "history": [], "stalled": 0,
            "done": False, "candidate": None}


def collect_stage(state: LoopState, runtime: Runtime[LoopContext], cfg: LoopConfig, row: dict) -> dict:
    """SFT examples or preference pairs for this round, sampled by the champion."""
    say = runtime.context.say
    kind, extra = cfg.collection(state["round"])
    extra.setdefault("limit", cfg.train_limit)
    deps = _deps(runtime)
    teacher = extra.get("teacher")
    plan, prompts = deps.collection_prompts(kind, split=cfg.split, limit=extra["limit"], teacher=teacher)
    if plan is not None:
        extra["teacher"] = plan
    with runtime.context.collecting(f"collect {kind} round {cfg.start_round + state['round']}", len(prompts),
                                    FOUND[kind]) as on_chunk:
        rep = deps.collect(kind, split=cfg.split, round_index=cfg.start_round + state["round"], n=cfg.n,
                           model_version=state["champion"], batch_size=cfg.batch_size, on_chunk=on_chunk,
                           worker=cfg.worker, wait=True, prompts=prompts, **extra)
    say(f"  collected {rep.prompts} prompts: " + (", ".join(f"{v} {k}" for k, v in rep.stored.items()) or "nothing new"))
    collected = {"kind": kind, "prompts": rep.prompts, **rep.stored}
    limits = deps.settings.collect
    if kind == "pairs" and not teacher and limits.safety_limit:  # VPO's harmlessness: pairs on flagged requests
        from promptloop.store.repository import select_harmful

        harmful = select_harmful(deps.engine, limits.safety_split, limits.safety_limit)
        with runtime.context.collecting(f"collect safety pairs round {cfg.start_round + state['round']}",
                                        len(harmful), FOUND[kind]) as on_chunk:
            srep = deps.collect(kind, split=limits.safety_split, round_index=cfg.start_round + state["round"],
                                n=cfg.n, model_version=state["champion"], batch_size=cfg.batch_size,
                                on_chunk=on_chunk, worker=cfg.worker, wait=True, prompts=harmful,
                                limit=limits.safety_limit, max_refine_steps=0, margin=cfg.margin, rule=cfg.rule)
        collected["safety_pairs"] = srep.stored.get("safety_pairs", 0) + rep.stored.get("safety_pairs", 0)
        say(f"  collected {srep.prompts} flagged requests of {limits.safety_split}: "
            f"{srep.stored.get('safety_pairs', 0)} safety pairs")
    row.update(algorithm=cfg.step(state["round"]), collected=collected,
               champion=state["champion"],
               collected_by=f"teacher:{cfg.teacher}" if teacher else state["champion"])
    return {}


def train_stage(state: LoopState, runtime: Runtime[LoopContext], cfg: LoopConfig, row: dict) -> dict:
    """Train the round's algorithm from the champion; no data means no candidate, not an error."""
    algo = cfg.algorithm(state["round"])
    r = cfg.start_round + state["round"]
    tcfg = load_config(algo, cfg.sft_config if algo == "sft" else cfg.dpo_config, round_index=r,
                       parent=state["champion"], name=f"{cfg.name}-r{r}-{algo}", max_steps=cfg.max_steps,
                       data_rounds="current")
    try:
        with runtime.context.training(f"train {tcfg.run.name}") as on_step:
            res = _deps(runtime).train(algo, tcfg, on_step=on_step)
    except NothingToTrain as exc:
        runtime.context.say(f"  nothing to train: {exc}")
        row["training"] = {"skipped": str(exc)}
        return {"candidate": None}
    m = res.version.metrics
    row["training"] = {k: m.get(k) for k in ("global_step", "first_loss", "last_loss", "train_loss", "wall_s",
                                              "last_rewards_accuracies", "last_rewards_margins")}
    row["training"]["rows"] = res.version.data_provenance.get("rows")
    t = row["training"]
    runtime.context.say(f"  trained {res.version.name}: {t['rows']} rows, {t['global_step']} steps, loss "
                        f"{t['first_loss']} -> {t['last_loss']}, {t['wall_s']} s")
    return {"candidate": res.version.name}


def evaluate_stage(state: LoopState, runtime: Runtime[LoopContext], cfg: LoopConfig, row: dict) -> dict:
    """Champion and candidate on the held-out bench (the champion's evaluation is cached)."""
    systems = [state["champion"]] + ([state["candidate"]] if state.get("candidate") else [])
    rep = _deps(runtime).evaluate(systems, EvalConfig(bench=cfg.eval_bench, limit=cfg.eval_limit,
                                                      redteam_limit=cfg.redteam_limit),
                                  progress=lambda m: runtime.context.say(f"  {m}"))
    row["eval"] = {r.system: r.metrics for r in rep.results}
    row["eval_outputs"] = {r.system: r.outputs_path for r in rep.results}  # per-prompt rows for the gate
    tracking = _deps(runtime).settings.tracking
    if tracking.report_to:  # the round's held-out numbers next to the training curves, x axis = round
        settings = _deps(runtime).settings
        metrics = {f"eval/{system}/{k}": v for system, m in row["eval"].items() for k, v in m.items()}
        done = log_metrics(tracking.report_to, runs_dir=settings.runs_dir, project=tracking.project, run=cfg.name,
                           metrics=metrics, step=cfg.start_round + state["round"])
        runtime.context.say(f"  eval metrics logged to {', '.join(done)}")
    return {}


def promote_stage(state: LoopState, runtime: Runtime[LoopContext], cfg: LoopConfig, row: dict) -> dict:
    """Promote or keep the champion, then go on, finish, or stop early when rounds stall."""
    champ, cand = state["champion"], state.get("candidate")
    stalled = state.get("stalled", 0)
    if not cand:
        decision = {"promoted": False, "reason": "no new version this round (no training data)"}
        stalled += 1
    else:
        deps = _deps(runtime)
        items = {k: load_items(v) for k, v in row["eval_outputs"].items() if v}
        pairwise = None
        if deps.settings.eval.judge is not None and items.get(cand) and items.get(champ):
            pairwise = deps.pairwise([r["prompt"] for r in items[cand]], [r["output"] for r in items[cand]],
                                     [r["output"] for r in items[champ]])
        references = None
        if cfg.step(state["round"]) == "teacher-sft":  # the teacher's own intent recall, on its training rows
            ref = deps.teacher_reference(cfg.start_round + state["round"])
            references = {k: (v, f"teacher:{cfg.teacher}") for k, v in ref.items()}
            row["teacher_reference"] = ref
        decision = decide(deps.engine, deps.settings.promotion, champ, cand, row["eval"], items,
                          report={"pairwise": pairwise} if pairwise else None, references=references)
        champ = cand if decision["promoted"] else champ
        stalled = stalled + 1 if decision["gain"] < cfg.min_improvement or not decision["promoted"] else 0
    row.update(decision=decision, champion_after=champ)
    runtime.context.say(f"  {'promoted' if decision['promoted'] else 'kept champion'}: {decision['reason']}")
    nxt = state["round"] + 1
    update: dict = {"champion": champ, "stalled": stalled, "candidate": None}
    if nxt >= cfg.rounds:
        update.update(done=True, stop_reason=f"finished {cfg.rounds} round(s)")
    elif stalled >= cfg.patience:
        update.update(done=True, stop_reason=f"stopped early: {stalled} round(s) without an improvement of at "
                                             f"least {cfg.min_improvement}")
    else:
        update["round"] = nxt
    return update


Stage = Callable[[LoopState, Runtime[LoopContext], LoopConfig, dict], dict]
STAGES: dict[str, Stage] = {"collect": collect_stage, "train": train_stage, "evaluate": evaluate_stage,
                            "promote": promote_stage}


def timed(stage: str, fn: Stage) -> Callable[[LoopState, Runtime[LoopContext]], dict]:
    """A stage as a node: its round's history row is read, updated with the stage's wall time, written back."""

    def node(state: LoopState, runtime: Runtime[LoopContext]) -> dict:
        cfg = _cfg(state)
        row = _row(state)
        runtime.context.say(f"stage {stage} round {state['round']} (store round {cfg.start_round + state['round']})")
        t0 = time.perf_counter()
        update = fn(state, runtime, cfg, row)
        row["timings"] = {**row.get("timings", {}), stage: round(time.perf_counter() - t0, 1)}
        return {**update, "history": _with_row(state, row)}

    node.__name__ = stage
    return node


def route(state: LoopState) -> str:
    return END if state.get("done") else "collect"


def build_loop_graph(*, checkpointer: Any = None) -> CompiledStateGraph:
    g = StateGraph(LoopState, context_schema=LoopContext)
    g.add_node("start", start)
    for name, fn in STAGES.items():
        g.add_node(name, timed(name, fn))
    g.add_edge(START, "start")
    g.add_edge("start", "collect")
    g.add_edge("collect", "train")
    g.add_edge("train", "evaluate")
    g.add_edge("evaluate", "promote")
    g.add_conditional_edges("promote", route, ["collect", END])
    return g.compile(checkpointer=checkpointer, name="loop")


def decide(engine: Engine, promotion: PromotionSettings, champion: str, candidate: str, evals: dict[str, dict],
           items: dict[str, list[dict]], report: dict | None = None,
           references: dict[str, tuple[float, str]] | None = None) -> dict:
    """The promotion gate (evaluation/gate.py) on the held-out evaluation; the decision is recorded either way.

    ``evals`` holds each system's metrics, ``items`` its per-prompt rows (same prompts, same order);
    ``report`` is recorded with the decision without deciding anything (the pairwise judge's verdict);
    ``references`` are guardrail levels of a teacher round (gate.with_reference).
    """
    primary = promotion.primary_metric
    try:
        d = gate.decide(primary, [r[primary] for r in items.get(champion, [])],
                        [r[primary] for r in items.get(candidate, [])], evals[champion], evals[candidate],
                        promotion.guardrails, confidence=promotion.confidence, resamples=promotion.resamples,
                        references=references)
    except (KeyError, ValueError) as exc:
        raise PromptloopError(f"promotion settings: {exc}") from exc
    decision = {**d.to_dict(), "gain": d.primary.get("gain", 0.0), "interval": d.primary.get("interval"),
                **(report or {})}
    set_status(engine, candidate, VersionStatus.champion if d.promoted else VersionStatus.rejected, note=decision)
    return decision


@dataclass
class LoopRun:
    state: dict
    resumed_from: str | None  # the stage a killed run stopped in
    already_done: bool = False


def run_loop(deps: LoopDeps, cfg: LoopConfig, *, log: Log | None = None,
             progress: CollectionProgress | None = None, train_progress: TrainingProgress | None = None) -> LoopRun:
    """Start the loop, or resume it at the stage it stopped in (same name = same thread)."""
    graph = build_loop_graph(checkpointer=deps.checkpointer)
    context = LoopContext(deps=deps, log=log, progress=progress, train_progress=train_progress)
    config = {"configurable": {"thread_id": cfg.thread_id}, "recursion_limit": 10 + 5 * cfg.rounds}
    recorded = finished_result(deps.engine, cfg.thread_id)  # finished, its checkpoints kept or pruned
    if recorded is not None:
        return LoopRun(recorded, None, already_done=True)
    snap = graph.get_state(config)
    if snap.values and not snap.next:
        record_finished(deps.engine, cfg.thread_id, "loop", _jsonable(snap.values))
        return LoopRun(dict(snap.values), None, already_done=True)
    if snap.values:
        stored = LoopConfig(**snap.values["config"])
        if asdict(stored) != asdict(cfg) and log:
            log(f"resuming loop '{cfg.name}' with the settings it started with (flags given now are ignored)")
        stage = snap.next[0]
        if log:
            log(f"resuming loop '{cfg.name}' at round {snap.values.get('round', 0)} stage {stage}")
        values = graph.invoke(None, config, context=context)
        record_finished(deps.engine, cfg.thread_id, "loop", _jsonable(values))  # returned: at its end
        return LoopRun(dict(values), stage)
    values = graph.invoke({"config": asdict(cfg)}, config, context=context)
    record_finished(deps.engine, cfg.thread_id, "loop", _jsonable(values))
    return LoopRun(dict(values), None)


def _jsonable(values: Any) -> dict:
    return json.loads(json.dumps(dict(values), default=str))


def loop_state(checkpointer: Any, name: str, engine: Engine | None = None) -> dict | None:
    """The loop's state: from its checkpoints, or from the store once it finished and they were pruned."""
    graph = build_loop_graph(checkpointer=checkpointer)
    thread_id = LoopConfig(name=name).thread_id
    snap = graph.get_state({"configurable": {"thread_id": thread_id}})
    if not snap.values:
        recorded = finished_result(engine, thread_id) if engine is not None else None
        return {**recorded, "next": []} if recorded is not None else None
    return {**snap.values, "next": list(snap.next)}
