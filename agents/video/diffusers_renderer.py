"""Rendering with diffusers text-to-video pipelines.

One class for CogVideoX (2B/5B), Wan2.1, LTX-Video and any ``DiffusionPipeline``
whose call takes a prompt and returns ``.frames``: the model is a hub id, a
local folder, or ``tiny`` (agents/video/tiny.py). Keyword arguments are passed
only when the pipeline's ``__call__`` accepts them, so architectures with
different call signatures share the code. Requests with identical settings
are rendered together in batches; a batch that fails is retried one video at
a time, so one bad prompt (OOM, NaN frames) is recorded as failed with its
error while the rest render.
"""

from __future__ import annotations

import gc
import inspect
import logging
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from promptloop.agents.renderer import Renderer, RenderRequest, VideoArtifact
from promptloop.agents.video.media import write_mp4, write_thumbnail
from promptloop.agents.video.tiny import TINY_DEFAULTS, TINY_LABEL, TINY_MODEL_ID, TINY_NAME
from promptloop.errors import PromptloopError

log = logging.getLogger(__name__)

# Defaults for real models when a request leaves a field unset: CogVideoX-2b's published settings.
REAL_DEFAULTS = {"num_frames": 49, "width": 720, "height": 480, "steps": 50, "fps": 8, "guidance_scale": 6.0}


class RenderFailure(RuntimeError):
    pass


class DiffusersRenderer(Renderer):
    name = "diffusers"

    def __init__(self, model: str = TINY_NAME, *, out_dir: str | Path, dtype: str = "auto", device: str = "auto",
                 cpu_offload: bool = False, vae_tiling: bool = False, vae_slicing: bool = False,
                 batch_size: int = 1, defaults: dict | None = None, progress: bool = True, pipeline: Any = None,
                 lora: str | Path | None = None):
        self.model = model
        self.lora = str(lora) if lora else None
        # a fine-tuned LoRA (learners/rwr.py) renders different videos: it is part of the model's identity
        self.model_id = (TINY_MODEL_ID if model == TINY_NAME else model) + (
            f"+lora:{Path(self.lora).name}" if self.lora else "")
        self.label = TINY_LABEL if model == TINY_NAME else None
        self.out_dir = Path(out_dir)
        self.dtype_name, self.device_name = dtype, device
        self.cpu_offload, self.vae_tiling, self.vae_slicing = cpu_offload, vae_tiling, vae_slicing
        self.batch_size = max(1, batch_size)
        base = TINY_DEFAULTS if model == TINY_NAME else REAL_DEFAULTS
        self.defaults = {**base, **{k: v for k, v in (defaults or {}).items() if v is not None}}
        self.progress = progress
        if pipeline is not None:
            pipeline.set_progress_bar_config(disable=True)  # ours shows videos done; its own shows steps
            self.__dict__["pipeline"] = pipeline  # an already built pipeline (tests, apps that own one)

    # --- loading ------------------------------------------------------------------------
    @cached_property
    def device(self) -> str:
        import torch

        if self.device_name != "auto":
            return self.device_name
        return "cuda" if torch.cuda.is_available() else "cpu"

    @cached_property
    def torch_dtype(self) -> Any:
        import torch

        if self.dtype_name == "auto":
            return torch.bfloat16 if self.device == "cuda" else torch.float32
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype_name]

    @cached_property
    def pipeline(self) -> Any:
        t0 = time.perf_counter()
        if self.model == TINY_NAME:
            from promptloop.agents.video.tiny import build_tiny_cogvideox

            pipe = build_tiny_cogvideox()
        else:
            try:
                from diffusers import DiffusionPipeline
            except ImportError as exc:  # pragma: no cover - the [video] extra is missing
                raise PromptloopError("rendering needs the video extra: pip install 'promptloop[video]'") from exc
            try:
                pipe = DiffusionPipeline.from_pretrained(self.model, torch_dtype=self.torch_dtype)
            except Exception as exc:  # noqa: BLE001 - many loaders, one message a user can act on
                where = "local folder" if Path(self.model).exists() else "hub id (needs network or the HF cache)"
                raise PromptloopError(f"could not load video model '{self.model}' as a {where}: "
                                      f"{type(exc).__name__}: {exc}") from exc
        if not callable(pipe) or "prompt" not in inspect.signature(pipe.__call__).parameters:
            raise PromptloopError(f"'{self.model}' is not a text-to-video pipeline (its call takes no prompt)")
        if self.lora:
            if not Path(self.lora).is_dir():
                raise PromptloopError(f"video LoRA not found: {self.lora}")
            pipe.load_lora_weights(self.lora, adapter_name="rwr")
        if self.model == TINY_NAME and self.torch_dtype != pipe.transformer.dtype:
            pipe = pipe.to(dtype=self.torch_dtype)
        if self.cpu_offload and self.device == "cuda":
            pipe.enable_model_cpu_offload()
        else:
            pipe = pipe.to(self.device)
        vae = getattr(pipe, "vae", None)
        if self.vae_tiling and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
        if self.vae_slicing and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        pipe.set_progress_bar_config(disable=True)
        log.info("loaded %s on %s/%s in %.1fs", self.model_id, self.device, self.torch_dtype,
                 time.perf_counter() - t0)
        return pipe

    # --- requests -----------------------------------------------------------------------
    def resolve(self, request: RenderRequest) -> RenderRequest:
        fill = {k: v for k, v in self.defaults.items() if getattr(request, k, None) is None}
        return request.model_copy(update=fill)

    def check(self, r: RenderRequest) -> str | None:
        """Why the pipeline cannot render ``r`` as asked, or None. Checked before any compute is spent."""
        pipe = self.pipeline
        t = int(getattr(pipe, "vae_scale_factor_temporal", 1) or 1)
        spatial = int(getattr(pipe, "vae_scale_factor_spatial", 8) or 8)
        patch = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "patch_size", None) or 1
        step = spatial * (patch if isinstance(patch, int) else patch[-1])
        tconf = getattr(getattr(pipe, "transformer", None), "config", None)
        if type(getattr(pipe, "vae", None)).__name__ == "AutoencoderKLCogVideoX" and \
                getattr(tconf, "patch_size_t", None) is None:
            t *= 2  # CogVideoX 1.0 decodes latents in pairs after the first: an odd latent count, 8k+1 frames
        if t > 1 and (r.num_frames - 1) % t:
            near = 1 + t * max(1, round((r.num_frames - 1) / t))
            return f"num_frames={r.num_frames}: {self.model_id} renders 1 + {t}k frames (e.g. {near})"
        if r.width % step or r.height % step:
            return f"size {r.width}x{r.height}: {self.model_id} needs width and height divisible by {step}"
        return None

    def output_path(self, r: RenderRequest) -> Path:
        if r.output:
            return Path(r.output)
        key = self.cache_key(r)
        return self.out_dir / key[:2] / f"{key}.mp4"

    # --- rendering ----------------------------------------------------------------------
    def render_many(self, requests: Sequence[RenderRequest]) -> list[VideoArtifact]:
        from tqdm.auto import tqdm

        resolved = [self.resolve(r) for r in requests]
        results: list[VideoArtifact | None] = [None] * len(resolved)
        todo = []
        for i, r in enumerate(resolved):
            problem = self.check(r)
            if problem:
                results[i] = self._failed(r, f"invalid request: {problem}")
            else:
                todo.append(i)
        groups: dict[str, list[int]] = {}
        for i in todo:
            groups.setdefault(repr(sorted(resolved[i].params().items())), []).append(i)
        batches = [ids[s:s + self.batch_size] for ids in groups.values() for s in range(0, len(ids), self.batch_size)]
        with tqdm(total=len(todo), desc=f"render {self.model_id}", unit="video", disable=not self.progress,
                  leave=False) as bar:
            for batch in batches:
                for i, art in zip(batch, self._render_batch([resolved[i] for i in batch]), strict=True):
                    results[i] = art
                bar.update(len(batch))
                self._release()
        return [r for r in results if r is not None]

    def _render_batch(self, batch: list[RenderRequest]) -> list[VideoArtifact]:
        t0 = time.perf_counter()
        try:
            videos = self._call(batch)
        except Exception as exc:  # noqa: BLE001 - recorded per video, never stops a collection
            if len(batch) > 1:
                self._release()
                return [self._render_batch([r])[0] for r in batch]
            return [self._failed(batch[0], _describe(exc))]
        per = (time.perf_counter() - t0) / len(batch)
        out = []
        for r, frames in zip(batch, videos, strict=True):
            if not np.isfinite(frames).all():
                out.append(self._failed(r, "NaN frames: the pipeline produced non-finite pixels"))
                continue
            path = self.output_path(r)
            write_mp4(frames, path, r.fps)
            thumb = write_thumbnail(frames, path.with_suffix(".png"))
            out.append(VideoArtifact(path=str(path), thumbnail_path=str(thumb), model=self.model_id, seed=r.seed,
                                     frames=int(frames.shape[0]), fps=float(r.fps), width=int(frames.shape[2]),
                                     height=int(frames.shape[1]), params=r.params(), seconds=round(per, 3),
                                     label=self.label))
        return out

    def _call(self, batch: list[RenderRequest]) -> list[np.ndarray]:
        import torch

        pipe, r = self.pipeline, batch[0]
        accepted = inspect.signature(pipe.__call__).parameters
        kwargs = {"prompt": [x.prompt for x in batch], "height": r.height, "width": r.width,
                  "num_frames": r.num_frames, "num_inference_steps": r.steps, "guidance_scale": r.guidance_scale,
                  "output_type": "np"}
        if r.negative_prompt:
            kwargs["negative_prompt"] = [r.negative_prompt] * len(batch)
        gen_device = "cpu" if self.cpu_offload else self.device
        kwargs["generator"] = [torch.Generator(device=gen_device).manual_seed(x.seed) for x in batch]
        max_text = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "max_text_seq_length", None)
        if max_text and "max_sequence_length" in accepted:
            kwargs["max_sequence_length"] = int(max_text)
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        with torch.inference_mode():
            result = pipe(**kwargs)
        frames = getattr(result, "frames", None)
        if frames is None:
            raise RenderFailure(f"{type(pipe).__name__} returned no .frames: not a text-to-video pipeline")
        videos = [np.asarray(v, dtype=np.float32) for v in frames]
        if len(videos) != len(batch):
            raise RenderFailure(f"asked for {len(batch)} videos, the pipeline returned {len(videos)}")
        return videos

    def _failed(self, r: RenderRequest, error: str) -> VideoArtifact:
        log.warning("render failed for %r (seed %s): %s", r.prompt[:60], r.seed, error)
        return VideoArtifact(path=None, model=self.model_id, seed=r.seed, params=r.params(), status="failed",
                             error=error, label=self.label)

    def _release(self) -> None:
        """Give memory back between batches, so a long collection does not creep towards OOM."""
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if "out of memory" in str(exc).lower() or name == "OutOfMemoryError":
        return f"OOM: {exc}".strip()
    return f"{name}: {exc}"
