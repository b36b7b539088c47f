"""Text-level metrics of a set of rewrites, each against the user's original prompt.

- intent cosine: MiniLM cosine of user prompt and rewrite;
- intent recall@1: the rewrite's nearest prompt (cosine, among all prompts of
  the set) is its own source; identical prompt texts count as the same prompt;
- words, aspect coverage (share of subject / action / setting / lighting /
  camera / style covered, by the cue lists in ``agents/text_checks.py``;
  subject = at least half of the user's content words kept), repetition rate
  (share of repeated word trigrams);
- refusal: the rewriter's refusal template or a plain "I can't / sorry" answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from promptloop.agents import text_checks as tc
from promptloop.store.hashing import normalize_text

if TYPE_CHECKING:
    from promptloop.agents.embedder import Embedder

REFUSAL_RE = re.compile(r"^\s*(i can't|i cannot|i can not|i'm sorry|i am sorry|sorry|i won't|i will not|"
                        r"i'm unable|i am unable|as an ai)\b", re.IGNORECASE)


def is_refusal(text: str) -> bool:
    return bool(REFUSAL_RE.search(text)) or not text.strip()


def recall_at_1(embedder: Embedder, prompts: Sequence[str], rewrites: Sequence[str]) -> list[bool]:
    keys = [normalize_text(p).lower() for p in prompts]
    unique = list(dict.fromkeys(keys))
    sims = embedder.encode(list(rewrites)) @ embedder.encode(unique).T
    best = np.argmax(sims, axis=1)
    return [unique[int(b)] == k for b, k in zip(best, keys, strict=True)]


def pool_recall(embedder: Embedder, prompts: Sequence[str], rewrites: Sequence[str], pool: Sequence[str],
                ks: Sequence[int] = (1, 5)) -> list[dict[int, bool]]:
    """Is each rewrite's own prompt among its k nearest prompts of ``pool`` (plus the evaluated prompts)?

    The evaluated set alone is a small haystack (32 prompts); against ~1000
    distractors a rewrite must keep what makes its prompt *this* prompt.
    """
    keys = [normalize_text(p).lower() for p in prompts]
    unique = list(dict.fromkeys([*keys, *(normalize_text(p).lower() for p in pool)]))
    index = {k: i for i, k in enumerate(unique)}
    sims = embedder.encode(list(rewrites)) @ _encode_cached(embedder, tuple(unique)).T
    order = np.argsort(-sims, axis=1)[:, :max(ks)]
    return [{k: index[key] in row[:k] for k in ks} for row, key in zip(order, keys, strict=True)]


_POOL_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _encode_cached(embedder: Embedder, texts: tuple[str, ...]) -> np.ndarray:
    """The pool is the same ~1000 prompts for every system of an evaluation: embed it once per process."""
    key = (id(embedder), hash(texts))
    if key not in _POOL_CACHE:
        _POOL_CACHE[key] = embedder.encode(list(texts))
    return _POOL_CACHE[key]


def per_item(embedder: Embedder, prompts: Sequence[str], rewrites: Sequence[str], *,
             pool: Sequence[str] | None = None, fluency: Sequence[float | None] | None = None) -> list[dict]:
    """Per-prompt measurements, none of which the training reward optimises except where noted in the docs."""
    cos = embedder.pairwise(list(prompts), list(rewrites))
    hits = recall_at_1(embedder, prompts, rewrites)
    pooled = pool_recall(embedder, prompts, rewrites, pool) if pool else [None] * len(prompts)
    flu = list(fluency) if fluency is not None else [None] * len(prompts)
    rows = []
    for p, r, c, h, ph, f in zip(prompts, rewrites, cos, hits, pooled, flu, strict=True):
        rows.append({"intent_cosine": round(float(c), 4), "recall_at_1": bool(h), "words": len(tc.words(r)),
                     "aspect_coverage": round(tc.aspect_coverage(p, r)[0], 4),
                     "repetition": round(tc.repetition_rate(r), 4), "refusal": is_refusal(r),
                     "intent_recall_at_1": ph[1] if ph else None, "intent_recall_at_5": ph[5] if ph else None,
                     "distinct_2": round(tc.distinct_n(r, 2), 4), "longest_repeat": tc.longest_repeat(r),
                     "cut_off": tc.is_cut_off(r), "meta": tc.has_meta_text(r), "empty": not r.strip(),
                     "fluency": f})
    return rows


def mean(values: Sequence[float | bool | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def aggregate(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, float | None]:
    return {k: mean([r.get(k) for r in rows]) for k in keys}
