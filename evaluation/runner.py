"""Evaluate rewriter versions and baselines on a held-out prompt set.

A model system rewrites each prompt once, greedily (deterministic, so two
versions are compared on their best guess rather than on sampling luck),
through the same screen the rewrite graph applies: refused requests get the
graph's refusal, flagged ones are rewritten from their benign core. Every
output is then scored against the user's original prompt with the
deterministic critic and the reward judge. Red-team prompts go through the
full rewrite graph instead (what an app's user gets: sampling, critique,
refinement and the output guard) and are classed by the holdout's rubric
(evaluation/safety.py), a judge nothing is optimised on. Results are cached in the ``evaluations`` table by
(system, prompts, settings): the loop evaluates a champion once.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session

from promptloop.agents.embedder import Embedder
from promptloop.agents.judge import JudgeInput, RewardJudge
from promptloop.agents.llm.base import SamplingParams
from promptloop.agents.llm.reference import ReferenceLM
from promptloop.agents.rewriter import Rewriter
from promptloop.agents.safety.guard import SafetyGuard
from promptloop.agents.safety.sanitizer import screen
from promptloop.agents.text_critic import TextCritic
from promptloop.config import Settings
from promptloop.errors import PromptloopError
from promptloop.evaluation.benches import Bench, load_bench, load_redteam
from promptloop.evaluation.metrics import aggregate, per_item
from promptloop.evaluation.safety import HOLDOUT, safety_metrics
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import ModelVersion

# 2: intent recall against the distractor pool, degeneracy, fluency; 3: median words, VBench pool; 4: red team through
# the rewrite graph on the holdout, classed by its rubric (VPO's table)
METRICS_VERSION = 4
ITEM_KEYS = ("intent_cosine", "recall_at_1", "intent_recall_at_1", "intent_recall_at_5", "words", "aspect_coverage",
             "repetition", "distinct_2", "longest_repeat", "fluency", "refusal", "cut_off", "meta", "empty")
RATES = {"refusal": "refusal_rate", "cut_off": "cut_off_rate", "meta": "meta_rate", "empty": "empty_rate"}


class EvalDeps(Protocol):
    """What evaluation uses, and nothing else: the store, settings, and the agents that rewrite and score.

    The composition root satisfies it; its properties load models on first
    use, so an evaluation answered from the cache loads none.
    """

    @property
    def engine(self) -> Engine: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def guard(self) -> SafetyGuard: ...
    @property
    def embedder(self) -> Embedder: ...
    @property
    def judge(self) -> RewardJudge: ...
    @property
    def deterministic_critic(self) -> TextCritic: ...
    @property
    def reference_lm(self) -> ReferenceLM: ...
    def rewriter(self, adapter: str | None = None) -> Rewriter: ...
    def resolve_model_version(self, version: str | None) -> str | None: ...
    def graph_rewrite(self, prompts: Sequence[str], adapter: str | None, max_new_tokens: int
                      ) -> list[tuple[str, bool]]:
        """(final prompt, refused) per prompt from the full rewrite graph, as an app gets them."""
        ...


@dataclass
class EvalConfig:
    bench: str = "eval"
    limit: int | None = None  # prompts of the bench (None = all)
    redteam_limit: int | None = None  # harmful and benign red-team prompts each (None = all, 0 = skip)
    redteam_file: str = HOLDOUT  # which shipped red-team holdout (evaluation.safety.HOLDOUTS)
    max_new_tokens: int | None = None  # None = the generation setting
    allow_contaminated: bool = False  # evaluate versions trained on some of the bench's prompts (and say so)

    def key(self, settings: Settings) -> dict:
        s = settings
        return {"v": METRICS_VERSION, "redteam_limit": self.redteam_limit,
                **({"redteam_file": self.redteam_file} if self.redteam_file != HOLDOUT else {}),
                "max_new_tokens": self.max_new_tokens or s.generation.max_new_tokens, "greedy": True,
                "words": [s.rewrite.target_words_min, s.rewrite.target_words_max], "judge": s.judge.weights,
                "guard": s.guard.model_dump(), "controls": s.sampling.rewriter.model_dump(),
                "graph": [s.generation.n, s.generation.temperature, s.critic.max_refine_steps, s.seed]}


@dataclass
class SystemResult:
    system: str  # raw | public:<name> | a version name
    label: str
    metrics: dict
    version: str | None = None
    round_index: int | None = None
    algorithm: str | None = None
    outputs_path: str | None = None
    cached: bool = False
    contaminated: int = 0  # the bench's prompts this version (or an ancestor) trained on


@dataclass
class EvalReport:
    bench: str
    n_prompts: int
    results: list[SystemResult] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def by_system(self) -> dict[str, SystemResult]:
        return {r.system: r for r in self.results}

    def to_json(self) -> dict:
        return {"bench": self.bench, "n_prompts": self.n_prompts, "settings": self.settings,
                "results": [asdict(r) for r in self.results]}


Progress = Callable[[str], None]


def rewrite_once(deps: EvalDeps, adapter: str | None, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """One greedy rewrite per prompt, behind the input screen (as the rewrite graph does): a refusal for what
    has nothing benign left, the benign core's rewrite for what the guard flags."""
    screened = screen(deps.guard, list(prompts))
    out: list[str | None] = [s.refusal for s in screened]
    todo = [i for i, s in enumerate(screened) if not s.refused]
    if todo:
        # the rewriter's own controls: evaluation measures what `rewrite` gives a user
        params = SamplingParams.of(deps.settings.sampling.rewriter, n=1, max_new_tokens=max_new_tokens,
                                   temperature=0.0, seed=deps.settings.seed)
        res = deps.rewriter().rewrite([screened[i].core or prompts[i] for i in todo], params, adapter=adapter)
        for i, r in zip(todo, res, strict=True):
            out[i] = r.candidates[0] if r.candidates and r.candidates[0] else ""
    return [o or "" for o in out]


def score(deps: EvalDeps, prompts: Sequence[str], outputs: Sequence[str], *, pool: Sequence[str] = ()
          ) -> tuple[dict, list[dict]]:
    """Per-prompt rows and their means: the judge (the training reward) and what it does not optimise."""
    fluency = deps.reference_lm.mean_logprob(list(outputs))
    rows = per_item(deps.embedder, prompts, outputs, pool=pool, fluency=fluency)
    crits = deps.deterministic_critic.critique_many(list(zip(prompts, outputs, strict=True)))
    rewards = deps.judge.score_many([JudgeInput(user_prompt=p, candidate=o, critique=c)
                                   for p, o, c in zip(prompts, outputs, crits, strict=True)])
    for row, rw in zip(rows, rewards, strict=True):
        row["judge_total"] = rw.total
        row.update({f"judge_{k}": v for k, v in rw.dimensions.items()})
    metrics = aggregate(rows, [*ITEM_KEYS, "judge_total", *sorted(k for k in rows[0] if k.startswith("judge_")
                                                                  and k != "judge_total")])
    for item_key, rate in RATES.items():
        metrics[rate] = metrics.pop(item_key)
    metrics["words_median"] = float(statistics.median(r["words"] for r in rows)) if rows else None
    return metrics, rows


def _system_rows(deps: EvalDeps, system: str):
    from promptloop.store.versions import ensure_base, get_version

    if system == "raw" or system.startswith("public:"):
        return system, None
    if system in ("base", "champion"):  # the base model is registered on first use, as collection does
        ensure_base(deps.engine, deps.settings.base_model)
    row = get_version(deps.engine, system)
    label = row.name if system == row.name else f"{system} ({row.name})"
    return label, row


class ContaminatedError(PromptloopError):
    """A version trained on prompts of the bench it is evaluated on."""


def contamination(deps: EvalDeps, version: ModelVersion | None, bench: Bench) -> int:
    """How many of the bench's prompts ``version`` (or an ancestor) trained on, by prompt hash."""
    if version is None:
        return 0
    from promptloop.store.hashing import prompt_hash
    from promptloop.store.versions import trained_prompt_hashes

    trained = trained_prompt_hashes(deps.engine, version)
    return sum(prompt_hash(p) in trained for p in dict.fromkeys(bench.prompts)) if trained else 0


def evaluate_system(deps: EvalDeps, system: str, bench: Bench, cfg: EvalConfig, progress: Progress | None = None
                    ) -> SystemResult:
    say = progress or (lambda _m: None)
    label, version = _system_rows(deps, system)
    dirty = contamination(deps, version, bench)
    if dirty and not cfg.allow_contaminated:
        raise ContaminatedError(f"{label} trained on {dirty} of the {len(bench.prompts)} {bench.name} prompts; "
                                "its scores there would measure memory, not skill (--allow-contaminated to "
                                "evaluate anyway, marked in the table)")
    ident = version.name if version is not None else system
    key = cfg.key(deps.settings) | ({"adapter": version.adapter_path} if version is not None else {})
    with Session(deps.engine) as s:
        hit = repo.find_evaluation(s, ident, bench.name, bench.prompts, key)
    meta = dict(version=version.name if version else None, algorithm=version.algorithm if version else None,
                round_index=_round_index(deps, version))
    meta["contaminated"] = dirty
    if hit is not None:
        return SystemResult(ident, label, hit.metrics, outputs_path=hit.outputs_path, cached=True, **meta)
    max_new = cfg.max_new_tokens or deps.settings.generation.max_new_tokens
    harmful, benign = load_redteam(cfg.redteam_limit, cfg.redteam_file) if cfg.redteam_limit != 0 else ([], [])
    red_rows = harmful + benign
    red: list[tuple[str, bool]] | None = None
    if system.startswith("public:"):
        name = system.split(":", 1)[1]
        if name not in bench.public:
            raise PromptloopError(f"bench '{bench.name}' has no public rewrites '{name}' "
                                  f"(available: {', '.join(bench.public) or 'none'})")
        outputs = bench.public[name]
    elif system == "raw":
        outputs = list(bench.prompts)
        red = [(r.prompt, False) for r in red_rows]
    else:
        adapter = deps.resolve_model_version(version.name)
        say(f"{label}: rewriting {len(bench.prompts)} {bench.name} prompts")
        outputs = rewrite_once(deps, adapter, bench.prompts, max_new)
        if red_rows:
            say(f"{label}: {len(harmful)} harmful and {len(benign)} benign red-team prompts through the rewrite graph")
            red = deps.graph_rewrite([r.prompt for r in red_rows], adapter, max_new)
    say(f"{label}: scoring")
    metrics, rows = score(deps, bench.prompts, outputs, pool=bench.pool)
    red_out: list[dict] = []
    if red is not None and red_rows:
        metrics_red, classes = safety_metrics(red_rows, [o for o, _ in red], [f for _, f in red])
        metrics.update(metrics_red)
        red_out = [{"prompt": r.prompt, "category": r.category, "harmful": r.harmful, "output": o, "refused": f,
                    "class": c} for r, (o, f), c in zip(red_rows, red, classes, strict=True)]
    metrics["n"] = len(bench.prompts)
    path = _write_outputs(deps, bench, ident, key, rows, outputs, red_out)
    with session_scope(deps.engine) as s:
        repo.add_evaluation(s, ident, bench.name, bench.prompts, key, metrics=metrics, outputs_path=str(path),
                            model_version_id=version.id if version else None)
    if version is not None and version.adapter_path and Path(version.adapter_path).is_dir():
        refresh_card(deps.engine, version, deps.settings.base_model)  # the adapter's card gains this evaluation
    return SystemResult(ident, label, metrics, outputs_path=str(path), **meta)


def refresh_card(engine: Engine, version: ModelVersion, base_model: str) -> None:
    """Write the version's model card again with every evaluation stored for it (the report's columns)."""
    from promptloop.agents.llm.prepare import hub_id
    from promptloop.evaluation.columns import COLUMNS, SAFETY_COLUMNS
    from promptloop.store.cards import version_card, write_card

    columns = [(metric, header) for metric, header, _ in [*COLUMNS, *SAFETY_COLUMNS]]
    write_card(Path(version.adapter_path), version_card(engine, version, base_hub_id=hub_id(base_model),
                                                        columns=columns))


def _round_index(deps: EvalDeps, version: ModelVersion | None) -> int | None:
    if version is None or version.round_id is None:
        return None
    from promptloop.store.models import Round

    with Session(deps.engine) as s:
        r = s.get(Round, version.round_id)
        return r.index if r else None


def _write_outputs(deps: EvalDeps, bench: Bench, ident: str, key: dict, rows: list[dict], outputs: list[str],
                   red_rows: list[dict]) -> Path:
    digest = repo.evaluation_key(ident, bench.name, bench.prompts, key)[:10]
    folder = deps.settings.reports_dir / "eval" / bench.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ident.replace(':', '_').replace('/', '_')}-{digest}.jsonl"
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for p, o, r in zip(bench.prompts, outputs, rows, strict=True):
            fh.write(json.dumps({"prompt": p, "output": o, **r}, ensure_ascii=False) + "\n")
        for r in red_rows:
            fh.write(json.dumps({"redteam": True, **r}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def load_items(outputs_path: str | Path) -> list[dict]:
    """The per-prompt rows of an evaluation (its outputs file, red-team rows left out), in prompt order."""
    rows = [json.loads(line) for line in Path(outputs_path).read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if not r.get("redteam")]


def evaluate(deps: EvalDeps, systems: Sequence[str], cfg: EvalConfig, progress: Progress | None = None) -> EvalReport:
    bench = load_bench(deps.engine, cfg.bench, cfg.limit)
    report = EvalReport(bench.name, len(bench.prompts), settings=cfg.key(deps.settings) | {"limit": cfg.limit})
    seen = set()
    for system in systems:
        res = evaluate_system(deps, system, bench, cfg, progress)
        if res.system in seen:  # e.g. 'champion' and its own name
            continue
        seen.add(res.system)
        report.results.append(res)
    return report


def default_systems(deps: EvalDeps, bench: str) -> list[str]:
    """Raw prompts, the untrained model, every trained version, and on VBench the public rewrites."""
    from sqlmodel import select

    from promptloop.store.models import ModelVersion

    with Session(deps.engine) as s:
        trained = [v.name for v in s.exec(select(ModelVersion).where(ModelVersion.algorithm != "base")
                                          .order_by(ModelVersion.id))]
    from promptloop.evaluation.benches import VBENCH_PARTS
    from promptloop.store.shipped import VBENCH_REWRITES

    public = [f"public:{k}" for k in VBENCH_REWRITES] if bench in VBENCH_PARTS else []
    return ["raw", *public, "base", *trained]
