"""Video-level feedback for collected candidates (VPO stage 2 on rendered videos).

Every candidate rewrite of a chunk is rendered ``video_seeds`` times (one
batched call to the render cache, so nothing renders twice across runs or
workers), each video is scored against the user's original prompt, and the
scores are stored as video-level rewards linked to the video row. A
candidate's video dimensions are the mean over its successful renders; its
reward becomes the combination of text and video totals (agents/judge.py
``combine_levels``). A failed render is stored with its error, leaves the
candidate with text-level feedback only, and never stops the collection.

The node re-runs safely after a crash: renders come from the cache and the
per-video rewards already stored are read back instead of recomputed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import select

from promptloop.agents.judge import combine_levels, weighted_total
from promptloop.agents.renderer import RenderRequest
from promptloop.agents.video.cache import RenderCache, StoredVideo
from promptloop.agents.video.scorer import VideoScorer
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import Reward

log = logging.getLogger(__name__)
VIDEO_JUDGE = "video-judge-v1"


@dataclass
class VideoFeedback:
    cache: RenderCache  # its renderer fills unset request fields from Settings.video and the model's defaults
    scorer: VideoScorer
    weights: dict[str, float]

    @property
    def engine(self) -> Engine:
        return self.cache.engine

    def apply(self, items: list[dict], *, seeds: int, base_seed: int, share: float) -> list[dict]:
        slots = [(i, j, base_seed + s) for i, item in enumerate(items)
                 for j, _ in enumerate(item.get("candidates", [])) for s in range(seeds)]
        if not slots:
            return items
        requests = [RenderRequest(prompt=items[i]["candidates"][j], seed=seed) for i, j, seed in slots]
        videos = self.cache.render_many(requests)
        scored = self._scores(videos, [items[i]["prompt"] for i, _, _ in slots])
        per_candidate: dict[tuple[int, int], list[tuple[StoredVideo, dict | None]]] = {}
        for (i, j, _), video in zip(slots, videos, strict=True):
            per_candidate.setdefault((i, j), []).append((video, scored.get(video.video_id)))
        out = []
        for i, item in enumerate(items):
            item = dict(item)
            if item.get("candidates"):
                renders, rewards = [], []
                for j, reward in enumerate(item["rewards"]):
                    entries = per_candidate[(i, j)]
                    renders.append([{"video_id": v.video_id, "seed": v.artifact.seed, "status": v.artifact.status,
                                     "error": v.artifact.error} for v, _ in entries])
                    rewards.append(combine_levels(reward, _mean_dims([d for _, d in entries if d is not None]),
                                                  self.weights, share))
                item["videos"], item["rewards"] = renders, rewards
            out.append(item)
        return out

    def _scores(self, videos: list[StoredVideo], prompts: list[str]) -> dict[int, dict]:
        """Video id -> its dimensions: read back when stored, else measured and stored (video-level rewards)."""
        ok = {v.video_id: (v, p) for v, p in zip(videos, prompts, strict=True) if v.ok}
        if not ok:
            return {}
        with session_scope(self.engine) as s:
            rows = s.exec(select(Reward).where(Reward.video_id.in_(list(ok)), Reward.judge == VIDEO_JUDGE,
                                               Reward.candidate_id.is_(None)))
            stored: dict[int, dict] = {}
            for r in rows:
                stored.setdefault(r.video_id, {})[r.dimension] = r.score
        measured = {}
        for vid, (video, prompt) in ok.items():
            if vid in stored and "video_total" in stored[vid]:
                continue
            try:
                measured[vid] = (self.scorer.score_file(video.artifact.path, prompt), prompt)
            except Exception as exc:  # noqa: BLE001 - an unreadable file loses its video feedback only
                log.warning("could not score video %s: %s", vid, exc)
        if measured:
            with session_scope(self.engine) as s:  # one transaction for the chunk's new video rewards
                for vid, (scores, prompt) in measured.items():
                    total, used = weighted_total(scores.dimensions, self.weights)
                    for dim, value in scores.dimensions.items():
                        repo.add_reward(s, VIDEO_JUDGE, dim, value, video_id=vid,
                                        details={"raw": scores.raw.get(dim), **scores.details.get(dim, {})})
                    repo.add_reward(s, VIDEO_JUDGE, "video_total", total if used else None, video_id=vid,
                                    details={"weights": used, "user_prompt": prompt, "seconds": scores.seconds})
                    stored[vid] = {**scores.dimensions, "video_total": total if used else None}
        return {vid: {k: v for k, v in d.items() if k != "video_total"} for vid, d in stored.items()}


def _mean_dims(dims: list[dict]) -> dict[str, float | None]:
    """Per dimension, the mean over the renders that measured it (None if none did)."""
    keys = dict.fromkeys(k for d in dims for k in d)
    out = {}
    for k in keys:
        vals = [d[k] for d in dims if d.get(k) is not None]
        out[k] = round(float(np.mean(vals)), 4) if vals else None
    return out


def feedback_level(chosen: dict, rejected: dict) -> str:
    """Which feedback supports a pair: 'both' when the chosen side wins on text and video totals,
    'video' when only the video total says so, 'text' otherwise (including no video feedback)."""
    cv, rv = chosen.get("video_total"), rejected.get("video_total")
    text_wins = chosen.get("text_total", chosen["total"]) > rejected.get("text_total", rejected["total"])
    video_wins = cv is not None and rv is not None and cv > rv
    if video_wins:
        return "both" if text_wins else "video"
    return "text"
