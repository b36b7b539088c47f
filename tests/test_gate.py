"""The promotion gate on fixed numbers: paired bootstrap interval and guardrails."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap

from promptloop.evaluation.gate import check_guardrail, decide, paired_interval

GUARDS = {"intent_recall_at_1": 0.02, "repetition": 0.02}


def test_paired_interval_matches_scipy_and_reflects_pairing():
    parent = [0.50, 0.60, 0.55, 0.70, 0.40, 0.65, 0.52, 0.58]
    cand = [p + d for p, d in zip(parent, [0.04, 0.06, 0.05, 0.03, 0.07, 0.05, 0.04, 0.06], strict=True)]
    low, high = paired_interval(cand, parent, resamples=4000, seed=3)
    ref = bootstrap((np.array(cand), np.array(parent)), lambda a, b, axis: np.mean(a - b, axis=axis), paired=True,
                    vectorized=True, n_resamples=4000, method="percentile", rng=np.random.default_rng(3))
    assert (low, high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert 0.04 < low < 0.05 < high < 0.06  # every prompt gained 0.03-0.07: the interval sits inside that
    # the same numbers unpaired would swamp the gain in the spread between prompts; paired they do not
    shuffled = list(reversed(parent))
    lo2, _ = paired_interval(cand, shuffled, resamples=4000, seed=3)
    assert lo2 < 0 < low


def test_paired_interval_without_spread_and_bad_input():
    assert paired_interval([0.6, 0.7], [0.5, 0.6]) == pytest.approx((0.1, 0.1))
    with pytest.raises(ValueError, match="equal-length"):
        paired_interval([0.1, 0.2], [0.1])


def test_guardrail_directions():
    assert check_guardrail("intent_recall_at_1", 0.90, 0.89, 0.02).passed       # dropped 0.01 of 0.02 allowed
    assert not check_guardrail("intent_recall_at_1", 0.90, 0.85, 0.02).passed   # dropped 0.05
    assert check_guardrail("repetition", 0.10, 0.115, 0.02).passed              # rose 0.015
    assert not check_guardrail("repetition", 0.10, 0.20, 0.02).passed           # rose 0.10
    assert check_guardrail("repetition", 0.30, 0.0, 0.0).passed                 # better is always fine
    assert check_guardrail("unsafe_output_rate", None, 0.5, 0.0).passed         # unmeasured: not applied
    with pytest.raises(ValueError, match="unknown guardrail metric"):
        check_guardrail("vibes", 1, 1, 0)


def test_a_win_by_repetition_and_length_is_rejected():
    """The judge total rises on every prompt, but repetition rises past its tolerance: not promoted."""
    parent = [0.70, 0.72, 0.75, 0.71, 0.69, 0.74]
    cand = [v + 0.04 for v in parent]
    d = decide("judge_total", parent, cand, {"intent_recall_at_1": 0.97, "repetition": 0.39, "words": 80},
               {"intent_recall_at_1": 0.97, "repetition": 0.46, "words": 112}, GUARDS)
    assert not d.promoted and d.rule == "guardrail:repetition"
    assert d.primary["interval"][0] > 0  # the primary metric alone would have promoted it
    assert [(g.metric, g.passed) for g in d.guardrails] == [("intent_recall_at_1", True), ("repetition", False)]


def test_a_true_win_is_promoted_and_noise_is_not():
    parent = [0.70, 0.72, 0.75, 0.71, 0.69, 0.74, 0.73, 0.70]
    better = [v + g for v, g in zip(parent, [0.03, 0.05, 0.02, 0.04, 0.06, 0.03, 0.04, 0.05], strict=True)]
    same = {"intent_recall_at_1": 0.95, "repetition": 0.05}
    d = decide("judge_total", parent, better, same, {"intent_recall_at_1": 0.96, "repetition": 0.04}, GUARDS)
    assert d.promoted and d.rule == "promoted" and d.primary["gain"] == pytest.approx(0.04)
    noisy = [v + g for v, g in zip(parent, [0.08, -0.07, 0.06, -0.05, 0.07, -0.08, 0.05, -0.04], strict=True)]
    d = decide("judge_total", parent, noisy, same, same, GUARDS)
    assert not d.promoted and d.rule == "primary" and d.primary["interval"][0] < 0 < d.primary["interval"][1]
    d = decide("judge_total", parent[:1], better[:1], same, same, GUARDS)
    assert not d.promoted and d.rule == "no-data"


def test_a_teacher_reference_lowers_a_guardrail_to_the_teachers_level_only():
    """A teacher round may fall to the teacher's own level on a guardrail, not below it, and never rises above
    the champion's bar because of it."""
    from promptloop.evaluation.gate import decide as gate_decide

    parent, cand = [0.70, 0.72, 0.71, 0.69], [0.85, 0.86, 0.88, 0.87]
    guard = {"intent_recall_at_1": 0.02}
    pm, cm = {"intent_recall_at_1": 0.875}, {"intent_recall_at_1": 0.70}
    plain = gate_decide("judge_total", parent, cand, pm, cm, guard)
    assert not plain.promoted and plain.rule == "guardrail:intent_recall_at_1"
    ok = gate_decide("judge_total", parent, cand, pm, cm, guard, references={"intent_recall_at_1": (0.71, "teacher:t")})
    assert ok.promoted and ok.guardrails[0].parent == 0.71 and "teacher:t 0.7100 (champion 0.8750)" in ok.guardrails[0].note
    low = gate_decide("judge_total", parent, cand, pm, {"intent_recall_at_1": 0.65}, guard,
                      references={"intent_recall_at_1": (0.71, "teacher:t")})
    assert not low.promoted and low.rule == "guardrail:intent_recall_at_1"  # below the teacher too
    high = gate_decide("judge_total", parent, cand, {"intent_recall_at_1": 0.60}, {"intent_recall_at_1": 0.59}, guard,
                       references={"intent_recall_at_1": (0.90, "teacher:t")})
    assert high.promoted and high.guardrails[0].parent == 0.60 and high.guardrails[0].note == ""
