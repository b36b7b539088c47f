"""Reading and writing video files: MP4 through imageio's ffmpeg plugin, PNG thumbnails.

Frames travel as uint8 arrays shaped (T, H, W, 3); every metric and the
renderer agree on that, so a video read back from disk and one fresh from a
pipeline are scored the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (what diffusers returns with output_type='np') or uint8 -> uint8 (T, H, W, 3)."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected frames shaped (T, H, W, C), got {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr[..., :3]


def write_mp4(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    """H.264 MP4 (yuv420p, plays in browsers). Width and height must be even."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(frames)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)  # never leave a half-written file under the name
    with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                            pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error") as w:
        for frame in arr:
            w.append_data(frame)
    tmp.replace(path)
    return path


def write_thumbnail(frames: np.ndarray, path: str | Path) -> Path:
    """The middle frame as PNG: what a list of videos shows before one is played."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(frames)
    Image.fromarray(arr[len(arr) // 2]).save(path)
    return path


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """All frames (or the first ``max_frames``) as uint8 (T, H, W, 3), and the container's fps."""
    import imageio.v2 as imageio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        fps = float(reader.get_meta_data().get("fps") or 0.0)
        frames = []
        for i, frame in enumerate(reader):
            if max_frames is not None and i >= max_frames:
                break
            frames.append(np.asarray(frame)[..., :3])
    finally:
        reader.close()
    if not frames:
        raise ValueError(f"{path} has no decodable frames")
    return np.stack(frames), fps


def sample_indices(n_frames: int, k: int) -> list[int]:
    """``k`` frame indices spread evenly over the clip (first and last included)."""
    if n_frames <= 0:
        return []
    if k >= n_frames:
        return list(range(n_frames))
    return sorted({int(round(i)) for i in np.linspace(0, n_frames - 1, k)})
