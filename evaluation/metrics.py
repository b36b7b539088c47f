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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promptloop.agents.embedder import Embedder

import re
from collections.abc import Sequence

import numpy as np

from promptloop.agents import text_checks as tc
from promptloop.store.hashing import normalize_text

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


def per_item(embedder: Embedder, prompts: Sequence[str], rewrites: Sequence[str]) -> list[dict]:
    cos = embedder.pairwise(list(prompts), list(rewrites))
    hits = recall_at_1(embedder, prompts, rewrites)
    rows = []
    for p, r, c, h in zip(prompts, rewrites, cos, hits, strict=True):
        rows.append({"intent_cosine": round(float(c), 4), "recall_at_1": bool(h), "words": len(tc.words(r)),
                     "aspect_coverage": round(tc.aspect_coverage(p, r)[0], 4),
                     "repetition": round(tc.repetition_rate(r), 4), "refusal": is_refusal(r)})
    return rows


def mean(values: Sequence[float | bool | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def aggregate(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, float | None]:
    return {k: mean([r.get(k) for r in rows]) for k in keys}
