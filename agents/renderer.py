"""The video renderer contract: prompt in, video artifact out.

Only the interface lives here; diffusers-backed implementations (CogVideoX,
Wan, LTX, a tiny CPU pipeline) come with the video feature. Artifacts are
files on disk referenced by path, never blobs in graph state or traces.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from pydantic import BaseModel, Field


class RenderRequest(BaseModel):
    prompt: str
    seed: int = 0
    num_frames: int = Field(16, ge=1)
    fps: int = Field(8, ge=1)
    width: int = Field(256, ge=8)
    height: int = Field(256, ge=8)
    steps: int = Field(30, ge=1)
    guidance_scale: float = 6.0


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


class Renderer(ABC):
    name: str

    @abstractmethod
    def render_many(self, requests: Sequence[RenderRequest]) -> list[VideoArtifact]:
        """Render in order; a failed item comes back with status 'failed' and its error, not an exception."""

    def render(self, request: RenderRequest) -> VideoArtifact:
        return self.render_many([request])[0]
