"""The reward judge: named reward dimensions and their weighted total.

A dimension is anything with a ``name``, a ``level`` (text or video) and a
``score(item)`` that returns a number in [0, 1] or None when it cannot be
measured here (e.g. text-video alignment with no image-text model). The text
dimensions below read the critic's critique; video dimensions (the video
issue) plug in by being added to the judge's list. The total is a weighted
mean over the dimensions that could be measured, so an unavailable dimension
is never scored as zero or invented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from promptloop.agents.text_critic import Critique


class JudgeInput(BaseModel):
    """What a dimension may look at. Video fields are filled when a render exists."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    user_prompt: str
    candidate: str
    critique: Critique | None = None
    video_path: str | None = None


class RewardDimension(Protocol):
    name: str
    level: Literal["text", "video"]

    def score(self, item: JudgeInput) -> float | None: ...


class Reward(BaseModel):
    dimensions: dict[str, float | None]
    total: float
    weights: dict[str, float] = Field(default_factory=dict)
    judge: str = "reward-judge-v1"


class CritiqueDimension:
    """A principle score or a deterministic check straight from the critique."""

    level: Literal["text"] = "text"

    def __init__(self, name: str, source: str | None = None):
        self.name = name
        self.source = source or name

    def score(self, item: JudgeInput) -> float | None:
        if item.critique is None:
            return None
        if self.source in ("harmless", "accurate", "helpful"):
            return float(getattr(item.critique, self.source))
        value = item.critique.checks.get(self.source)
        return None if value is None else float(value)


TEXT_DIMENSIONS = ("harmless", "accurate", "helpful", "aspect_coverage", "length_fit", "intent_similarity")


class RewardJudge:
    def __init__(self, weights: dict[str, float], dimensions: Sequence[RewardDimension] | None = None):
        self.dimensions: list[RewardDimension] = list(dimensions) if dimensions is not None else [
            CritiqueDimension(n) for n in TEXT_DIMENSIONS]
        self.weights = dict(weights)

    def add(self, dimension: RewardDimension) -> None:
        self.dimensions.append(dimension)

    def score(self, item: JudgeInput) -> Reward:
        dims = {d.name: _clip(d.score(item)) for d in self.dimensions}
        total, used = weighted_total(dims, self.weights)
        return Reward(dimensions=dims, total=total, weights=used)

    def score_many(self, items: Sequence[JudgeInput]) -> list[Reward]:
        return [self.score(i) for i in items]


def weighted_total(dims: dict[str, float | None], weights: dict[str, float]) -> tuple[float, dict[str, float]]:
    """Weighted mean over the dimensions that were measured and carry weight; (0.0, {}) when none do."""
    used = {k: weights.get(k, 0.0) for k, v in dims.items() if v is not None and weights.get(k, 0.0) > 0}
    total_w = sum(used.values())
    total = sum(dims[k] * w for k, w in used.items()) / total_w if total_w else 0.0
    return round(total, 4), used


def combine_levels(text_reward: dict, video_dims: dict[str, float | None] | None, video_weights: dict[str, float],
                   share: float) -> dict:
    """A candidate's reward with video-level feedback folded in (VPO stage 2).

    total = (1 - share) * text_total + share * video_total, where video_total
    is the weighted mean of the measured video dimensions (averaged over the
    candidate's renders). With no measured video dimension (every render
    failed) the total stays the text total and ``video_total`` is None.
    """
    text_total = text_reward.get("text_total", text_reward["total"])
    video_dims = dict(video_dims or {})
    text_dims = {k: v for k, v in text_reward["dimensions"].items() if k not in video_dims}
    video_total, used = weighted_total(video_dims, video_weights)
    if not used:
        return {**text_reward, "dimensions": {**text_dims, **video_dims}, "text_total": text_total,
                "video_total": None, "total": text_total}
    total = round((1 - share) * text_total + share * video_total, 4)
    return {**text_reward, "dimensions": {**text_dims, **video_dims}, "text_total": text_total,
            "video_total": video_total, "total": total,
            "weights": {**text_reward.get("weights", {}), **{f"video:{k}": w for k, w in used.items()}},
            "video_share": share}


def _clip(v: float | None) -> float | None:
    return None if v is None else round(min(1.0, max(0.0, float(v))), 4)
