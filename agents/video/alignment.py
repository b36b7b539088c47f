"""Text-video alignment with an image-text model (CLIP or SigLIP family).

Frames are sampled evenly, each is embedded with the model's image tower,
the user's prompt with its text tower, and the score is the mean cosine
similarity (clipped to [0, 1]; CLIP-family cosines of matching pairs sit
around 0.25-0.35, so compare scores from the same model only). Always the
user's original prompt, never the rewrite (scoring against the rewrite
rewards prompt inflation).

No image-text model ships in any package this project can depend on: with
none configured, or one that cannot be loaded here, the dimension is
reported unavailable (score None with the reason), never invented.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from promptloop.agents.video.media import sample_indices
from promptloop.agents.video.metrics import MetricResult


class TextVideoAlignment:
    name = "text_video_alignment"

    def __init__(self, model: str | None, *, frames: int = 8, device: str = "cpu"):
        self.model_ref = model
        self.frames = frames
        self.device = device

    @cached_property
    def _loaded(self) -> tuple[object, object] | str:
        """(model, processor), or why there is none."""
        if not self.model_ref:
            return "no image-text model configured (set video.alignment_model to a CLIP/SigLIP path or hub id)"
        try:
            from transformers import AutoModel, AutoProcessor

            model = AutoModel.from_pretrained(self.model_ref).to(self.device).eval()
            processor = AutoProcessor.from_pretrained(self.model_ref)
        except Exception as exc:  # noqa: BLE001 - offline hub id, missing folder, wrong architecture
            return f"image-text model '{self.model_ref}' unavailable here: {type(exc).__name__}: {str(exc)[:200]}"
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            return f"'{self.model_ref}' is not an image-text model (no get_image_features/get_text_features)"
        return model, processor

    def score(self, frames: np.ndarray, prompt: str) -> MetricResult:
        if isinstance(self._loaded, str):
            return MetricResult(self.name, None, details={"reason": self._loaded})
        import torch

        model, processor = self._loaded
        idx = sample_indices(len(frames), self.frames)
        images = [frames[i] for i in idx]
        with torch.inference_mode():
            text_in = processor(text=[prompt], return_tensors="pt", padding="max_length", truncation=True)
            image_in = processor(images=images, return_tensors="pt")
            t = _features(model.get_text_features(**{k: v.to(self.device) for k, v in text_in.items()}))
            v = _features(model.get_image_features(pixel_values=image_in["pixel_values"].to(self.device)))
            t = torch.nn.functional.normalize(t.float(), dim=-1)
            v = torch.nn.functional.normalize(v.float(), dim=-1)
            per = (v @ t[0]).tolist()
        mean = float(np.mean(per))
        return MetricResult(self.name, round(min(1.0, max(0.0, mean)), 4), round(mean, 4),
                            {"model": self.model_ref, "frames": idx, "cosine": [round(x, 4) for x in per]})


def _features(out: Any) -> Any:
    """transformers 5 returns a model output from get_*_features where 4.x returned the tensor."""
    if hasattr(out, "pooler_output") and out.pooler_output is not None:
        return out.pooler_output
    return out
