"""Frozen features of a video for learned heads (the critic): weight-free metrics plus plain frame statistics.

Nothing here is trained; the values describe what a person sees when rating
fidelity and motion (noise, blur, flicker, motion amount and regularity,
exposure, colour), so a small head over them can learn a rater's judgement
from a few hundred ratings on a CPU.
"""

from __future__ import annotations

import numpy as np

from promptloop.agents.video.metrics import frame_metrics, optical_flows

FEATURE_NAMES = ("flicker_mad", "motion_px", "dynamic_top5_px", "dynamic_share", "acceleration_ratio",
                 "speed_variation", "bad_frame_share", "brightness", "contrast", "colourfulness", "sharpness_log",
                 "noise_log")


def video_features(frames: np.ndarray) -> np.ndarray:
    import cv2

    flows = optical_flows(frames)
    m = frame_metrics(frames, flows)
    # how much the speed of the fastest-moving pixels changes from pair to pair (jerks, stutter)
    if len(flows) > 1:
        mag = np.linalg.norm(flows, axis=-1).reshape(len(flows), -1)
        top = np.sort(mag, axis=1)[:, -max(1, mag.shape[1] // 20):].mean(axis=1)
        speed_variation = float(top.std() / (top.mean() + 1e-3))
    else:
        speed_variation = 0.0
    f = frames.astype(np.float32)
    gray = f.mean(axis=-1)
    rg, yb = f[..., 0] - f[..., 1], 0.5 * (f[..., 0] + f[..., 1]) - f[..., 2]
    lap = [cv2.Laplacian(g, cv2.CV_32F).var() for g in gray]
    # high-frequency energy left after a light blur: grain and noise, whatever moves
    noise = [float(np.abs(g - cv2.GaussianBlur(g, (5, 5), 0)).mean()) for g in gray]
    smooth = m["flow_smoothness"]
    values = [m["temporal_flickering"].raw or 0.0, m["motion_magnitude"].raw or 0.0, m["flow_dynamic_degree"].raw or 0.0,
              m["flow_dynamic_degree"].score or 0.0, 0.0 if smooth.details.get("static") else (smooth.raw or 0.0),
              speed_variation, 1.0 - (m["frame_quality"].score or 0.0), float(gray.mean()), float(gray.std()),
              float(np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)),
              float(np.log1p(np.mean(lap))), float(np.log1p(np.mean(noise)))]
    return np.asarray(values, dtype=np.float64)
