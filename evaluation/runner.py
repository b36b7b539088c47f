"""Evaluate rewriter versions and baselines on a held-out prompt set.

A model system rewrites each prompt once, greedily (deterministic, so two
versions are compared on their best guess rather than on sampling luck),
through the same input guard the rewrite graph applies: blocked requests get
the graph's refusal, flagged ones the sanitising template. Every output is
then scored against the user's original prompt with the deterministic critic
and the reward judge. Results are cached in the ``evaluations`` table by
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
from promptloop.agents.safety.guard import REFUSAL, SafetyGuard
from promptloop.agents.text_critic import TextCritic
from promptloop.config import Settings
from promptloop.errors import PromptloopError
from promptloop.evaluation.benches import Bench, load_bench, load_redteam
from promptloop.evaluation.metrics import aggregate, is_refusal, mean, per_item
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import ModelVersion

METRICS_VERSION = 3  # 2: intent recall against the distractor pool, degeneracy, fluency; 3: median words, VBench pool
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


@dataclass
class EvalConfig:
    bench: str = "eval"
    limit: int | None = None  # prompts of the bench (None = all)
    redteam_limit: int | None = None  # harmful and benign red-team prompts each (None = all, 0 = skip)
    max_new_tokens: int | None = None  # None = the generation setting
    allow_contaminated: bool = False  # evaluate versions trained on some of the bench's prompts (and say so)

    def key(self, settings: Settings) -> dict:
        s = settings
        return {"v": METRICS_VERSION, "redteam_limit": self.redteam_limit,
                "max_new_tokens": self.max_new_tokens or s.generation.max_new_tokens, "greedy": True,
                "words": [s.rewrite.target_words_min, s.rewrite.target_words_max], "judge": s.judge.weights,
                "guard": s.guard.model_dump(), "controls": s.sampling.rewriter.model_dump()}


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
    """One greedy rewrite per prompt, behind the input guard (as the rewrite graph does)."""
    verdicts = deps.guard.check_many(list(prompts))
    out: list[str | None] = [REFUSAL.format(reason=v.reason) if v.action == "block" else None for v in verdicts]
    todo = [i for i, o in enumerate(out) if o is None]
    if todo:
        # the rewriter's own controls: evaluation measures what `rewrite` gives a user
        params = SamplingParams.of(deps.settings.sampling.rewriter, n=1, max_new_tokens=max_new_tokens,
                                   temperature=0.0, seed=deps.settings.seed)
        res = deps.rewriter().rewrite([prompts[i] for i in todo], params,
                                    unsafe_categories=[verdicts[i].flagged for i in todo], adapter=adapter)
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


def redteam_metrics(deps: EvalDeps, harmful: list[str], benign: list[str], outputs_h: list[str],
                    outputs_b: list[str]) -> dict:
    """Unsafe-output rate: a harmful request whose output is not a refusal and fails the guard."""
    verdicts = deps.guard.check_many(outputs_h) if outputs_h else []
    unsafe = [not is_refusal(o) and not v.safe for o, v in zip(outputs_h, verdicts, strict=True)]
    return {"unsafe_output_rate": mean(unsafe), "benign_refusal_rate": mean([is_refusal(o) for o in outputs_b]),
            "redteam_n": len(harmful) + len(benign)}


def _system_rows(deps: EvalDeps, system: str):
    from promptloop.store.versions import get_version

    if system == "raw" or system.startswith("public:"):
        return system, None
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
    harmful, benign = load_redteam(cfg.redteam_limit) if cfg.redteam_limit != 0 else ([], [])
    if system.startswith("public:"):
        name = system.split(":", 1)[1]
        if name not in bench.public:
            raise PromptloopError(f"bench '{bench.name}' has no public rewrites '{name}' "
                                  f"(available: {', '.join(bench.public) or 'none'})")
        outputs, oh, ob = bench.public[name], None, None
    elif system == "raw":
        outputs, oh, ob = list(bench.prompts), list(harmful), list(benign)
    else:
        adapter = deps.resolve_model_version(version.name)
        say(f"{label}: rewriting {len(bench.prompts)} {bench.name} prompts")
        outputs = rewrite_once(deps, adapter, bench.prompts, max_new)
        oh = ob = None
        if harmful or benign:
            say(f"{label}: rewriting {len(harmful)} harmful and {len(benign)} benign red-team prompts")
            red = rewrite_once(deps, adapter, harmful + benign, max_new)
            oh, ob = red[:len(harmful)], red[len(harmful):]
    say(f"{label}: scoring")
    metrics, rows = score(deps, bench.prompts, outputs, pool=bench.pool)
    if oh is not None and (harmful or benign):
        metrics.update(redteam_metrics(deps, harmful, benign, oh, ob))
    metrics["n"] = len(bench.prompts)
    red_rows = ([{"prompt": p, "output": o, "harmful": h} for p, o, h in
                 zip(harmful + benign, oh + ob, [True] * len(harmful) + [False] * len(benign), strict=True)]
                if oh is not None else [])
    path = _write_outputs(deps, bench, ident, key, rows, outputs, red_rows)
    with session_scope(deps.engine) as s:
        repo.add_evaluation(s, ident, bench.name, bench.prompts, key, metrics=metrics, outputs_path=str(path),
                            model_version_id=version.id if version else None)
    return SystemResult(ident, label, metrics, outputs_path=str(path), **meta)


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
    from promptloop.store.versions import ensure_base

    ensure_base(deps.engine, deps.settings.base_model)
    with Session(deps.engine) as s:
        trained = [v.name for v in s.exec(select(ModelVersion).where(ModelVersion.algorithm != "base")
                                          .order_by(ModelVersion.id))]
    from promptloop.evaluation.benches import VBENCH_PARTS
    from promptloop.store.shipped import VBENCH_REWRITES

    public = [f"public:{k}" for k in VBENCH_REWRITES] if bench in VBENCH_PARTS else []
    return ["raw", *public, "base", *trained]
