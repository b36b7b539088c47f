"""The learned critic (LiFT): predict people's per-dimension ratings of a video, then judge with it.

On a CPU: a ridge-regression head per rating dimension over frozen features
(agents/video/features.py: weight-free video metrics and frame statistics,
plus the prompt's MiniLM embedding, which is what lets it learn
prompt-dependent judgement). Targets are each video's mean score over raters.
Videos are split into train and held-out sets; the held-out metrics are the
critic's report card: per dimension Pearson and Spearman correlation with
the human means, and pairwise accuracy (for two held-out videos people rated
differently, how often the critic orders them the same way).

A GPU user would fine-tune a VLM (a Qwen2-VL-class model with TRL) behind the
same ``score(frames, prompt)`` interface; that path needs weights this
machine does not have and is not implemented here.

A trained critic is saved under ``<home>/critics/<name>`` (weights as .npz,
config and metrics as JSON) and registered as a model version with algorithm
``critic``; ``VideoCritic`` loads it and the reward judge uses it as
``critic_<dimension>`` video dimensions (``video.critic`` setting).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.agents.video.features import FEATURE_NAMES, video_features
from promptloop.agents.video.media import read_video
from promptloop.agents.video.metrics import MetricResult
from promptloop.config import Settings
from promptloop.errors import PromptloopError
from promptloop.store.models import Candidate, HumanRating, Prompt, Video

if TYPE_CHECKING:  # the embedder pulls in sentence-transformers; only its type is needed here
    from promptloop.agents.embedder import Embedder


@dataclass
class CriticConfig:
    name: str | None = None  # default critic-N
    dimensions: list[str] | None = None  # default: the rated dimensions in Settings.ratings
    l2: float = 1.0  # ridge penalty on standardised features
    holdout: float = 0.25  # share of videos held out for the metrics
    text_features: bool = True  # the prompt's MiniLM embedding beside the video features
    seed: int = 0
    min_videos: int = 8


@dataclass
class RatedVideo:
    video_id: int
    path: str
    prompt: str
    targets: dict[str, float]  # mean score over raters, per dimension
    raters: int = 0
    rendered: str = ""  # the text the video model rendered (the rewrite), what a video-model learner conditions on


@dataclass
class CriticReport:
    name: str
    path: str
    metrics: dict
    train_videos: int
    heldout_videos: int
    dimensions: list[str] = field(default_factory=list)


def rated_videos(engine: Engine, dimensions: list[str] | None = None) -> list[RatedVideo]:
    """Videos with ratings (on ``dimensions``, default all), each with its user prompt, the rendered text and the
    mean score per dimension, every scale mapped to [0, 1]."""
    q = (select(HumanRating, Video, Candidate, Prompt).join(Video, HumanRating.video_id == Video.id)
         .join(Candidate, Candidate.id == Video.candidate_id, isouter=True)
         .join(Prompt, Prompt.id == Candidate.prompt_id, isouter=True).where(Video.status == "ok"))
    if dimensions is not None:
        q = q.where(HumanRating.dimension.in_(dimensions))
    with Session(engine) as s:
        rows = s.exec(q).all()
    scores: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    info: dict[int, RatedVideo] = {}
    raters: dict[int, set[str]] = defaultdict(set)
    for h, v, c, p in rows:
        span = (h.scale_max - h.scale_min) or 1.0
        scores[v.id][h.dimension].append((h.score - h.scale_min) / span)
        raters[v.id].add(h.rater)
        rendered = c.text if c else (v.params or {}).get("prompt", "")
        info.setdefault(v.id, RatedVideo(v.id, v.path, p.text if p else rendered, {}, rendered=rendered))
    out = []
    for vid, dims in sorted(scores.items()):
        if Path(info[vid].path).is_file():
            info[vid].targets = {d: float(np.mean(x)) for d, x in dims.items()}
            info[vid].raters = len(raters[vid])
            out.append(info[vid])
    return out


class FeatureExtractor:
    def __init__(self, embedder: Embedder | None = None):
        self.embedder = embedder

    def __call__(self, frames: np.ndarray, prompt: str) -> np.ndarray:
        v = video_features(frames)
        if self.embedder is None:
            return v
        t = np.asarray(self.embedder.encode([prompt or ""])[0], dtype=np.float64)
        return np.concatenate([v, t])


def fit_ridge(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Closed-form ridge on standardised x; returns (weights, bias)."""
    a = x.T @ x + l2 * np.eye(x.shape[1])
    w = np.linalg.solve(a, x.T @ (y - y.mean()))
    return w, float(y.mean())


def pairwise_accuracy(pred: np.ndarray, true: np.ndarray) -> float | None:
    agree = total = 0
    for i in range(len(true)):
        for j in range(i + 1, len(true)):
            if abs(true[i] - true[j]) < 1e-9:
                continue
            total += 1
            agree += (pred[i] - pred[j]) * (true[i] - true[j]) > 0
    return round(agree / total, 4) if total else None


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 4)


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho with average ranks for ties (scipy): mean 1-5 ratings tie often, and ranking tied values
    in arbitrary order would move rho with the order the videos happen to be in."""
    from scipy.stats import spearmanr

    if len(a) < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return None
    return round(float(spearmanr(a, b).statistic), 4)


def train_critic(engine: Engine, out_dir: Path, cfg: CriticConfig, *, dimensions: list[str],
                 embedder: Embedder | None = None,
                 progress: bool = True) -> tuple[dict, dict]:
    """Fit the heads and measure them on held-out videos; returns (saved state, metrics)."""
    from tqdm.auto import tqdm

    data = rated_videos(engine, dimensions)
    if len(data) < cfg.min_videos:
        raise PromptloopError(f"the critic needs ratings on at least {cfg.min_videos} videos, the store has "
                              f"{len(data)}; import some with `promptloop ratings import` or rate with "
                              "`promptloop ratings serve`")
    extract = FeatureExtractor(embedder if cfg.text_features else None)
    feats = []
    for r in tqdm(data, desc="critic features", unit="video", disable=not progress, leave=False):
        frames, _ = read_video(r.path)
        feats.append(extract(frames, r.prompt))
    x_all = np.stack(feats)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(data))
    n_hold = max(2, int(round(cfg.holdout * len(data))))
    hold, train = order[:n_hold], order[n_hold:]
    mean, std = x_all[train].mean(axis=0), x_all[train].std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)  # a constant feature (one prompt for all) must stay 0, not float noise
    z = (x_all - mean) / std
    heads, metrics = {}, {"dimensions": {}, "train_videos": len(train), "heldout_videos": len(hold)}
    for d in dimensions:
        have = np.array([d in r.targets for r in data])
        tr, ho = train[have[train]], hold[have[hold]]
        if len(tr) < 3:
            continue
        y = np.array([data[i].targets.get(d, np.nan) for i in range(len(data))])
        w, b = fit_ridge(z[tr], y[tr], cfg.l2)
        heads[d] = {"w": w, "b": b}
        pred = z[ho] @ w + b
        metrics["dimensions"][d] = {
            "pearson": _corr(pred, y[ho]), "spearman": spearman(pred, y[ho]),
            "pairwise_accuracy": pairwise_accuracy(pred, y[ho]),
            "mae": round(float(np.abs(pred - y[ho]).mean()), 4) if len(ho) else None, "heldout": len(ho),
            "train_pearson": _corr(z[tr] @ w + b, y[tr])}
    if not heads:
        raise PromptloopError(f"no rating dimension has enough rated videos to train on ({', '.join(dimensions)})")
    state = {"mean": mean, "std": std, "heads": heads, "config": asdict(cfg), "dimensions": list(heads),
             "features": list(FEATURE_NAMES) + (["minilm"] if cfg.text_features else []),
             "heldout_video_ids": [data[i].video_id for i in hold]}
    save_critic(out_dir, state, metrics)
    return state, metrics


def save_critic(out_dir: Path, state: dict, metrics: dict) -> None:
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    arrays = {"mean": state["mean"], "std": state["std"]}
    for d, h in state["heads"].items():
        arrays[f"w::{d}"] = h["w"]
        arrays[f"b::{d}"] = np.array([h["b"]])
    np.savez(tmp / "critic.npz", **arrays)
    meta = {k: v for k, v in state.items() if k not in ("mean", "std", "heads")}
    (tmp / "critic.json").write_text(json.dumps({**meta, "metrics": metrics}, indent=2))
    tmp.replace(out_dir)


class VideoCritic:
    """A trained critic as video reward dimensions ``critic_<dimension>``, each in [0, 1]."""

    name = "critic"

    def __init__(self, path: str | Path, embedder: Embedder | None = None):
        path = Path(path)
        if not (path / "critic.npz").is_file():
            raise PromptloopError(f"no trained critic at {path} (expected critic.npz)")
        meta = json.loads((path / "critic.json").read_text())
        arrays = np.load(path / "critic.npz")
        self.path, self.meta = path, meta
        self.mean, self.std = arrays["mean"], arrays["std"]
        self.heads = {d: (arrays[f"w::{d}"], float(arrays[f"b::{d}"][0])) for d in meta["dimensions"]}
        uses_text = meta["config"].get("text_features", False)
        if uses_text and embedder is None:
            raise PromptloopError(f"critic {path.name} was trained with text features: it needs the embedder")
        self.extract = FeatureExtractor(embedder if uses_text else None)

    def predict(self, frames: np.ndarray, prompt: str) -> dict[str, float]:
        z = (self.extract(frames, prompt) - self.mean) / self.std
        return {d: float(z @ w + b) for d, (w, b) in self.heads.items()}

    def score(self, frames: np.ndarray, prompt: str) -> dict[str, MetricResult]:
        out = {}
        for d, v in self.predict(frames, prompt).items():
            out[f"critic_{d}"] = MetricResult(f"critic_{d}", round(min(1.0, max(0.0, v)), 4), round(v, 4),
                                              {"critic": self.path.name})
        return out


def run_critic(engine: Engine, settings: Settings, cfg: CriticConfig, *, embedder: Embedder | None,
               progress: bool = True) -> CriticReport:
    """Train on the store's ratings and register the critic as a model version (algorithm 'critic')."""
    from promptloop.store.versions import next_name, register

    dims = cfg.dimensions or list(settings.ratings.dimensions)
    name = cfg.name or next_name(engine, "critic")
    out = settings.home / "critics" / name
    if out.exists():
        raise PromptloopError(f"a critic folder exists at {out}; critics are never overwritten")
    state, metrics = train_critic(engine, out, cfg, dimensions=dims,
                                  embedder=embedder if cfg.text_features else None, progress=progress)
    register(engine, name=name, base_model="video-features+minilm ridge" if cfg.text_features else
             "video-features ridge", adapter_path=str(out), parent_id=None, algorithm="critic", round_index=-1,
             metrics=metrics, data_provenance={"heldout_video_ids": state["heldout_video_ids"],
                                               "dimensions": state["dimensions"], "config": asdict(cfg)})
    return CriticReport(name, str(out), metrics, metrics["train_videos"], metrics["heldout_videos"],
                        state["dimensions"])

