"""The guard's own figures: recall, benign pass and precision per category with the confusion table, and the
flag threshold chosen by cross-validation on the guard's training data, never on the holdout it is judged on.

The guard's classifier learns from ``data/redteam.csv`` and the train split
of the user prompts, so its scores on those rows are optimistic: a threshold
picked there would be picked on memorised rows. ``cross_validated_threshold``
refits the classifier k times, each time without one fold, and picks the
threshold on the out-of-fold verdicts only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from promptloop.agents.embedder import Embedder
from promptloop.agents.safety.guard import SAFE, GuardSettings, SafetyGuard, Verdict
from promptloop.evaluation.safety import RubricRow

ALLOWED = "allowed"


@dataclass
class GuardFigures:
    harmful: int
    benign: int
    recall: float  # harmful rows the guard flags (any category)
    benign_pass: float  # benign rows it allows
    precision: float  # flagged rows that are harmful
    per_category: dict[str, dict[str, float]]  # true category -> n, recall; predicted category -> precision
    confusion: dict[str, dict[str, int]]  # true category (or benign) -> predicted top category (or allowed) -> n


def figures(labels: Sequence[str], verdicts: Sequence[Verdict]) -> GuardFigures:
    """``labels`` are the true categories (``SAFE`` for benign rows); a verdict's prediction is its strongest
    flagged category, or ``allowed``."""
    predicted = [v.flagged[0] if v.flagged else ALLOWED for v in verdicts]
    harmful = [lab != SAFE for lab in labels]
    flagged = [p != ALLOWED for p in predicted]
    tp = sum(h and f for h, f in zip(harmful, flagged, strict=True))
    fp = sum(f and not h for h, f in zip(harmful, flagged, strict=True))
    n_h, n_b = sum(harmful), len(labels) - sum(harmful)
    confusion: dict[str, Counter] = {}
    for lab, p in zip(labels, predicted, strict=True):
        confusion.setdefault("benign" if lab == SAFE else lab, Counter())[p] += 1
    per: dict[str, dict[str, float]] = {}
    for cat in sorted({lab for lab in labels if lab != SAFE}):
        rows = [f for lab, f in zip(labels, flagged, strict=True) if lab == cat]
        named = [lab for lab, p in zip(labels, predicted, strict=True) if p == cat]
        per[cat] = {"n": len(rows), "recall": sum(rows) / len(rows),
                    "precision": (sum(lab == cat for lab in named) / len(named)) if named else float("nan")}
    return GuardFigures(n_h, n_b, tp / max(1, n_h), (n_b - fp) / max(1, n_b), tp / max(1, tp + fp), per,
                        {k: dict(v) for k, v in confusion.items()})


def cross_validated_threshold(embedder: Embedder, examples: Sequence[tuple[str, str]], config: GuardSettings,
                              grid: Sequence[float], *, folds: int = 5, min_benign_pass: float = 0.95
                              ) -> tuple[float, dict[float, tuple[float, float]]]:
    """The flag threshold with the highest out-of-fold recall among those that pass at least
    ``min_benign_pass`` of benign rows (the best benign-passing one if none reaches it), and every grid
    point's (recall, benign pass). Folds are interleaved over the examples, so each holds every category.

    Scored on the classifier layer alone: the patterns were written on these same rows and flag every one of
    them at any threshold below ``pattern_score``, which would make the choice say nothing."""
    scores = [0.0] * len(examples)
    for k in range(folds):
        train = [e for i, e in enumerate(examples) if i % folds != k]
        test = [i for i in range(len(examples)) if i % folds == k]
        guard = SafetyGuard(embedder, config, examples=train)
        for i, sc in zip(test, guard.harm_scores([examples[i][0] for i in test], fine_tuned=True), strict=True):
            scores[i] = max(sc.values(), default=0.0)
    labels = [lab for _, lab in examples]
    table = {}
    for t in grid:
        flagged = [s >= t for s in scores]
        h = [f for f, lab in zip(flagged, labels, strict=True) if lab != SAFE]
        b = [not f for f, lab in zip(flagged, labels, strict=True) if lab == SAFE]
        table[t] = (sum(h) / max(1, len(h)), sum(b) / max(1, len(b)))
    ok = [t for t, (_, bp) in table.items() if bp >= min_benign_pass]
    best = max(ok, key=lambda t: (table[t][0], t)) if ok else max(table, key=lambda t: (table[t][1], -t))
    return best, table


@dataclass
class DilutionFigures:
    """Per threshold t: the share of harmful training requests flagged when written as one sentence into a benign
    rewrite, by the whole text at t, or as the guard decides (the whole text at its flag threshold, or its most
    harmful sentence at t), and the share of benign rewrites each passes."""

    harmful: int
    benign: int
    grid: dict[float, dict[str, float]]  # threshold -> whole_recall, sentence_recall, whole_pass, sentence_pass


def dilution(embedder: Embedder, examples: Sequence[tuple[str, str]], rewrites: Sequence[str], config: GuardSettings,
             grid: Sequence[float], *, folds: int = 5, seed: int = 0) -> DilutionFigures:
    """How an output check sees harm inside a long rewrite. Each harmful training request (scored out of fold,
    like ``cross_validated_threshold``) becomes one sentence at a random place in a random benign rewrite;
    the benign rewrites alone measure what a check costs. Classifier layer only, for the same reason."""
    import random

    from promptloop.agents.safety.spans import sentences

    rng = random.Random(seed)
    whole: list[float] = []
    by_sentence: list[float] = []
    plain_whole: list[float] = []
    plain_sentence: list[float] = []

    def top(scores: dict[str, float]) -> float:
        return max(scores.values(), default=0.0)

    for k in range(folds):
        guard = SafetyGuard(embedder, config, examples=[e for i, e in enumerate(examples) if i % folds != k])
        texts = []
        for i, (text, label) in enumerate(examples):
            if i % folds != k or label == SAFE:
                continue
            host = sentences(rng.choice(rewrites))
            at = rng.randint(0, len(host))
            texts.append(" ".join([*host[:at], text[:1].upper() + text[1:].rstrip(".") + ".", *host[at:]]))
        whole += [top(s) for s in guard.harm_scores(texts, fine_tuned=True)]
        by_sentence += [max([top(s) for s, _ in ss], default=0.0) for ss in guard.sentence_scores(texts)]
        if k == 0:  # benign rewrites are no fold's training rows: one guard scores them
            plain_whole = [top(s) for s in guard.harm_scores(rewrites, fine_tuned=True)]
            plain_sentence = [max([top(s) for s, _ in ss], default=0.0) for ss in guard.sentence_scores(rewrites)]
    def either(w: Sequence[float], s: Sequence[float], t: float) -> list[float]:
        """The guard's rule: the whole text at the flag threshold, or one sentence at ``t`` (1.0 = flagged)."""
        return [float(a >= config.flag_threshold or b >= t) for a, b in zip(w, s, strict=True)]

    table = {}
    for t in grid:
        table[t] = {"whole_recall": _share(whole, t), "sentence_recall": _share(either(whole, by_sentence, t), 1.0),
                    "whole_pass": 1 - _share(plain_whole, t),
                    "sentence_pass": 1 - _share(either(plain_whole, plain_sentence, t), 1.0)}
    return DilutionFigures(len(whole), len(rewrites), table)


def _share(scores: Sequence[float], threshold: float) -> float:
    return sum(s >= threshold for s in scores) / max(1, len(scores))


def fold_guards(embedder: Embedder, examples: Sequence[tuple[str, str]], rubric: Sequence[RubricRow],
                config: GuardSettings, *, folds: int = 5, patterns: bool = True
                ) -> Iterator[tuple[SafetyGuard, list[int]]]:
    """Per fold: a guard whose classifier never saw the fold's rows, and the indexes of the ``rubric`` rows in
    that fold (``rubric`` rows are among ``examples``). ``patterns=False`` also drops the categories'
    patterns, which were written on the training rows and so catch them all: with them a table on those rows
    is optimistic, without them pessimistic about a new request."""
    from dataclasses import replace

    from promptloop.agents.safety.categories import CATEGORIES

    categories = CATEGORIES if patterns else tuple(replace(c, patterns=()) for c in CATEGORIES)
    fold_of = {text: i % folds for i, (text, _) in enumerate(examples)}
    missing = [r.prompt for r in rubric if r.prompt not in fold_of]
    if missing:
        raise ValueError(f"rubric rows not among the training examples: {missing[:3]}")
    for k in range(folds):
        guard = SafetyGuard(embedder, config, categories=categories,
                            examples=[e for i, e in enumerate(examples) if i % folds != k])
        yield guard, [n for n, r in enumerate(rubric) if fold_of[r.prompt] == k]


def sanitiser_outcomes(embedder: Embedder, examples: Sequence[tuple[str, str]], rubric: Sequence[RubricRow],
                       config: GuardSettings, *, folds: int = 5, patterns: bool = True
                       ) -> list[tuple[str | None, str]]:
    """Per rubric row, in order: what the rewriter would be given (the core, None when refused) and its class
    under the rubric, judged by a guard that never saw the row (:func:`fold_guards`). A development table:
    sanitiser choices are made here, not on a holdout."""
    from promptloop.agents.safety.sanitizer import screen
    from promptloop.evaluation.safety import classify

    out: list[tuple[str | None, str]] = [(None, "")] * len(rubric)
    for guard, todo in fold_guards(embedder, examples, rubric, config, folds=folds, patterns=patterns):
        for n, s in zip(todo, screen(guard, [rubric[n].prompt for n in todo]), strict=True):
            out[n] = (s.core, classify(rubric[n], s.core or s.refusal or "", s.refused))
    return out
