"""The video renderer contract: prompt in, video artifact out.

Implementations live in ``agents/video`` (``DiffusersRenderer``: CogVideoX,
Wan, LTX, any diffusers text-to-video pipeline, and the ``tiny`` CPU preset).
Artifacts are files on disk referenced by path, never blobs in graph state or
traces. Request fields left as None take the model's own defaults, so one
request shape serves a 49-frame CogVideoX render and a 9-frame tiny one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from pydantic import BaseModel, Field


class RenderRequest(BaseModel):
    prompt: str = Field(min_length=1)
    seed: int = 0
    num_frames: int | None = Field(None, ge=1)
    fps: int | None = Field(None, ge=1)
    width: int | None = Field(None, ge=8)
    height: int | None = Field(None, ge=8)
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0)
    negative_prompt: str | None = None
    output: str | None = Field(None, description="where to write the MP4; default: the renderer's folder")

    def params(self) -> dict:
        """What shapes the pixels besides prompt and seed (the render cache's key, with the model)."""
        return self.model_dump(exclude={"prompt", "seed", "output"})


class VideoArtifact(BaseModel):
    path: str | None
    thumbnail_path: str | None = None
    model: str
    seed: int
    frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    params: dict = Field(default_factory=dict)
    status: str = "ok"
    error: str | None = None
    seconds: float | None = None
    label: str | None = Field(None, description="shown wherever the video is (e.g. the tiny preset's warning)")


class Renderer(ABC):
    name: str
    model_id: str

    @abstractmethod
    def render_many(self, requests: Sequence[RenderRequest]) -> list[VideoArtifact]:
        """Render in order; a failed item comes back with status 'failed' and its error, not an exception."""

    def resolve(self, request: RenderRequest) -> RenderRequest:
        """The request with the model's defaults filled in."""
        return request

    def cache_key(self, request: RenderRequest) -> str:
        from promptloop.store.hashing import content_hash, normalize_text

        r = self.resolve(request)
        return content_hash("video", self.model_id, normalize_text(r.prompt), r.seed, r.params())

    def render(self, request: RenderRequest) -> VideoArtifact:
        return self.render_many([request])[0]
