"""Every video-level dimension of one video, from one decode of its frames.

The judge's video dimensions: the weight-free metrics (agents/video/metrics.py),
text-video alignment (an image-text model, or unavailable), frame safety
(open_nsfw), a VLM judge when one is served, and any extra scorer (a learned
critic) that follows the same ``score(frames, prompt)`` shape. A dimension
that cannot be measured here is None with its reason in ``details``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, Field

from promptloop.agents.video.media import read_video
from promptloop.agents.video.metrics import MetricResult, frame_metrics


class VideoScores(BaseModel):
    dimensions: dict[str, float | None]
    raw: dict[str, float | None] = Field(default_factory=dict)
    details: dict[str, dict] = Field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0


class FrameScorer(Protocol):
    def score(self, frames: np.ndarray, prompt: str) -> MetricResult | dict[str, MetricResult]: ...


class VideoScorer:
    def __init__(self, *, alignment: FrameScorer | None = None, nsfw: FrameScorer | None = None,
                 vlm: FrameScorer | None = None, extra: Sequence[FrameScorer] = ()):
        self.alignment = alignment
        self.nsfw = nsfw
        self.vlm = vlm
        self.extra = list(extra)

    def score_file(self, path: str | Path, prompt: str) -> VideoScores:
        frames, _ = read_video(path)
        return self.score_frames(frames, prompt)

    def score_frames(self, frames: np.ndarray, prompt: str) -> VideoScores:
        """``prompt`` is the user's original prompt, never the rewrite that produced the video."""
        t0 = time.perf_counter()
        results = dict(frame_metrics(frames))
        if self.alignment is not None:
            results["text_video_alignment"] = self.alignment.score(frames, prompt)
        else:
            results["text_video_alignment"] = MetricResult("text_video_alignment", None,
                                                           details={"reason": "no image-text model configured"})
        if self.nsfw is not None:
            results["frame_safety"] = self.nsfw.score(frames)
        for scorer in ([self.vlm] if self.vlm is not None else []) + self.extra:
            out = _safely(scorer, frames, prompt)
            results.update(out if isinstance(out, dict) else {out.name: out})
        dims = {k: r.score for k, r in results.items() if k != "motion_magnitude"}
        return VideoScores(dimensions=dims, raw={k: r.raw for k, r in results.items()},
                           details={k: r.details for k, r in results.items()}, frames=len(frames),
                           seconds=round(time.perf_counter() - t0, 4))


def _safely(scorer: FrameScorer, frames: np.ndarray, prompt: str) -> dict:
    """A remote or learned scorer that fails leaves its dimensions unavailable instead of failing the video."""
    try:
        return scorer.score(frames, prompt)
    except Exception as exc:  # noqa: BLE001
        name = getattr(scorer, "name", type(scorer).__name__)
        return MetricResult(str(name), None, details={"reason": f"{type(exc).__name__}: {str(exc)[:300]}"})
