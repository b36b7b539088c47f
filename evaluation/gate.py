"""The promotion gate: a candidate replaces the champion only when it is better beyond sampling noise and
no guardrail metric regresses.

The training reward (critic + judge) picks the pairs the rewriter learns from,
so a gain in it alone can be reward hacking (longer, more repetitive text the
judge pays for). Here the primary metric's gain must have a paired bootstrap
confidence interval above zero on the same held-out prompts, and each
guardrail, a metric the reward does not optimise, may move against the
candidate by at most its tolerance. Every decision keeps each number and the
rule that decided it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

# Which way is better for each metric a guardrail or the primary metric may name.
HIGHER_IS_BETTER = {
    "judge_total": True, "intent_cosine": True, "recall_at_1": True, "intent_recall_at_1": True,
    "intent_recall_at_5": True, "aspect_coverage": True, "distinct_2": True, "fluency": True,
    "repetition": False, "longest_repeat": False, "cut_off_rate": False, "meta_rate": False, "empty_rate": False,
    "refusal_rate": False, "unsafe_output_rate": False, "benign_refusal_rate": False,
}


@dataclass
class GuardrailCheck:
    metric: str
    parent: float | None
    candidate: float | None
    tolerance: float  # how far the candidate may move in the worse direction
    passed: bool
    note: str = ""


@dataclass
class Decision:
    promoted: bool
    rule: str  # "promoted", "primary", "guardrail:<metric>" or "no-data"
    reason: str
    primary: dict = field(default_factory=dict)  # metric, parent, candidate, gain, interval, confidence, n
    guardrails: list[GuardrailCheck] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def paired_interval(candidate: Sequence[float], parent: Sequence[float], *, confidence: float = 0.95,
                    resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(candidate - parent) over the same prompts (scipy, paired)."""
    from scipy.stats import bootstrap

    c, p = np.asarray(candidate, dtype=float), np.asarray(parent, dtype=float)
    if c.shape != p.shape or c.size < 2:
        raise ValueError(f"a paired interval needs two equal-length samples of at least 2, got {c.size} and {p.size}")
    if np.allclose(c - p, (c - p)[0]):  # no spread: the interval is the one difference there is
        d = float((c - p)[0])
        return d, d
    res = bootstrap((c, p), lambda a, b, axis: np.mean(a - b, axis=axis), paired=True, vectorized=True,
                    n_resamples=resamples, confidence_level=confidence, method="percentile",
                    rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def check_guardrail(metric: str, parent: float | None, candidate: float | None, tolerance: float) -> GuardrailCheck:
    """Passed when the candidate is no worse than the parent by more than ``tolerance`` (a magnitude)."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown guardrail metric '{metric}'; known: {', '.join(sorted(HIGHER_IS_BETTER))}")
    if parent is None or candidate is None:
        return GuardrailCheck(metric, parent, candidate, tolerance, True, "not measured on both; not applied")
    worse_by = (parent - candidate) if HIGHER_IS_BETTER[metric] else (candidate - parent)
    return GuardrailCheck(metric, parent, candidate, tolerance, worse_by <= abs(tolerance) + 1e-12)


def with_reference(check: GuardrailCheck, reference: float | None, label: str) -> GuardrailCheck:
    """``check`` against the worse of the parent and ``reference``: the level a deliberate change may fall to.

    A teacher round moves the rewriter to the teacher's operating point on
    purpose (100 words where the base model wrote 20), and a longer rewrite
    finds its source among 946 prompts less often than a near-copy does; the
    guardrail then asks for the teacher's own level, measured on its training
    rows, never on the held-out prompts.
    """
    if reference is None or check.parent is None or check.candidate is None:
        return check
    floor = min(check.parent, reference) if HIGHER_IS_BETTER[check.metric] else max(check.parent, reference)
    redone = check_guardrail(check.metric, floor, check.candidate, check.tolerance)
    redone.note = f"against {label} {reference:.4f} (champion {check.parent:.4f})" if floor != check.parent else ""
    return redone


def decide(primary: str, parent_items: Sequence[float], candidate_items: Sequence[float],
           parent_metrics: Mapping[str, float | None], candidate_metrics: Mapping[str, float | None],
           guardrails: Mapping[str, float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0,
           references: Mapping[str, tuple[float, str]] | None = None) -> Decision:
    """Promote iff the primary metric's paired interval of the gain is above zero and every guardrail passes.

    ``references`` (metric -> (value, label)) lets a guardrail hold against the worse of the parent and that
    reference (``with_reference``).
    """
    sign = 1.0 if HIGHER_IS_BETTER.get(primary, True) else -1.0
    if len(parent_items) < 2 or len(parent_items) != len(candidate_items):
        return Decision(False, "no-data", f"need the same >= 2 held-out prompts for both systems, got "
                                          f"{len(parent_items)} and {len(candidate_items)}")
    low, high = paired_interval([sign * v for v in candidate_items], [sign * v for v in parent_items],
                                confidence=confidence, resamples=resamples, seed=seed)
    old, new = float(np.mean(parent_items)), float(np.mean(candidate_items))
    prim = {"metric": primary, "parent": round(old, 4), "candidate": round(new, 4),
            "gain": round(sign * (new - old), 4), "interval": [round(low, 4), round(high, 4)],
            "confidence": confidence, "n": len(parent_items)}
    refs = references or {}
    checks = [with_reference(check_guardrail(m, parent_metrics.get(m), candidate_metrics.get(m), tol),
                             *refs.get(m, (None, ""))) for m, tol in guardrails.items()]
    failed = [g for g in checks if not g.passed]
    pct = f"{confidence:.0%}"
    if low <= 0:
        return Decision(False, "primary", f"{primary} gain {prim['gain']:+.4f} with {pct} interval "
                                          f"[{low:+.4f}, {high:+.4f}] is not above zero", prim, checks)
    if failed:
        g = failed[0]
        return Decision(False, f"guardrail:{g.metric}", f"{g.metric} {g.parent:.4f} -> {g.candidate:.4f} is worse "
                                                        f"than its tolerance {g.tolerance:g}", prim, checks)
    return Decision(True, "promoted", f"{primary} gain {prim['gain']:+.4f}, {pct} interval [{low:+.4f}, "
                                      f"{high:+.4f}] above zero; {len(checks)} guardrail(s) held", prim, checks)
