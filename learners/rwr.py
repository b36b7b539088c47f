"""Reward-weighted fine-tuning of the video model (LiFT): LoRA on the diffusion transformer.

Objective: for rated (or critic-scored) videos v_i with prompts p_i and
rewards r_i in [0, 1], minimise the reward-weighted diffusion loss

    L = sum_i w_i * || f_theta(z_i,t, t, p_i) - target_i ||^2  /  sum_i w_i

where z_i,t is the video's VAE latent noised to a random timestep t, target
is the noise (epsilon prediction) or the velocity (v-prediction, CogVideoX),
and the weight w_i comes from the reward (``weighting``):

- ``lift``: LiFT's label weights: r >= 0.75 (Good) -> 0.9, r >= 0.4 (Normal) -> 0.2, else (Bad) -> 0.05;
- ``normalized``: w = r / mean(r);
- ``exp``: w = exp(r / temperature) / mean(exp(r / temperature)) (reward-weighted regression).

Only a LoRA on the transformer's attention projections trains; the base
weights stay frozen, so the base model is always the reference (disabling the
adapter gives it back) and the saved artifact is the LoRA alone, loadable into
the same pipeline with ``load_lora_weights``. The VAE and text encoder are
frozen: latents and prompt embeddings are computed once. The same code runs
the tiny CPU pipeline in tests and CogVideoX on a GPU (bf16 there).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.config import Settings
from promptloop.errors import PromptloopError

if TYPE_CHECKING:  # diffusers and torch load on first use; only their types are needed here
    import torch

    from promptloop.agents.video.diffusers_renderer import DiffusersRenderer

WEIGHTINGS = ("lift", "normalized", "exp")
ADAPTER = "rwr_train"
LIFT_LABEL_WEIGHTS = {"good": 0.9, "normal": 0.2, "bad": 0.05}


@dataclass
class RWRConfig:
    name: str | None = None  # default rwr, rwr-2, ...
    source: str = "ratings"  # ratings (mean over raters and dimensions) | judge (stored video_total rewards)
    weighting: str = "lift"
    temperature: float = 0.2  # exp weighting
    rank: int = 8
    alpha: int = 8
    learning_rate: float = 1e-3
    steps: int = 50
    batch_size: int = 2
    seed: int = 0
    max_frames: int | None = None  # cap frames read per video (GPU memory)
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise PromptloopError(f"unknown weighting '{self.weighting}'; expected one of {', '.join(WEIGHTINGS)}")
        if self.source not in ("ratings", "judge"):
            raise PromptloopError(f"unknown reward source '{self.source}'; expected ratings or judge")


def sample_weights(rewards: np.ndarray, weighting: str, temperature: float = 0.2) -> np.ndarray:
    """Per-sample loss weights from rewards in [0, 1] (see the module docstring); higher reward, higher weight."""
    r = np.clip(np.asarray(rewards, dtype=np.float64), 0.0, 1.0)
    if weighting == "lift":
        return np.where(r >= 0.75, LIFT_LABEL_WEIGHTS["good"], np.where(r >= 0.4, LIFT_LABEL_WEIGHTS["normal"],
                                                                       LIFT_LABEL_WEIGHTS["bad"]))
    if weighting == "normalized":
        return r / max(r.mean(), 1e-8)
    if weighting == "exp":
        e = np.exp((r - r.max()) / temperature)
        return e / e.mean()
    raise PromptloopError(f"unknown weighting '{weighting}'; expected one of {', '.join(WEIGHTINGS)}")


@dataclass
class RewardedVideo:
    video_id: int
    path: str
    prompt: str  # what was rendered (the rewrite): the text the video model is conditioned on
    reward: float


def rewarded_videos(engine: Engine, source: str) -> list[RewardedVideo]:
    """Videos with a reward in [0, 1]: people's ratings (mean over dimensions of each dimension's mean over raters,
    learners/critic.py ``rated_videos``) or the judge's stored video totals; conditioned on the rendered text."""
    from promptloop.learners.video_critic import rated_videos
    from promptloop.store.models import Candidate, Reward, Video

    if source == "ratings":
        return [RewardedVideo(r.video_id, r.path, r.rendered, float(np.mean(list(r.targets.values()))))
                for r in rated_videos(engine) if r.rendered]
    with Session(engine) as s:
        rows = s.exec(select(Reward, Video).join(Video, Reward.video_id == Video.id)
                      .where(Reward.dimension == "video_total", Reward.score.is_not(None),
                             Reward.candidate_id.is_(None), Video.status == "ok")).all()
        texts = {c.id: c.text for c in s.exec(select(Candidate).where(
            Candidate.id.in_([v.candidate_id for _, v in rows if v.candidate_id])))}
    out = []
    for r, v in sorted(rows, key=lambda rv: rv[1].id):
        prompt = texts.get(v.candidate_id) or (v.params or {}).get("prompt")
        if prompt and v.path and Path(v.path).is_file():
            out.append(RewardedVideo(v.id, v.path, prompt, float(r.score)))
    return out


def _latents(pipe: Any, frames: np.ndarray) -> torch.Tensor:
    """VAE latents of uint8 frames (T, H, W, 3) in the layout the transformer takes: (1, T', C, H', W')."""
    import torch

    video = torch.from_numpy(frames).float().div(127.5).sub(1.0).permute(3, 0, 1, 2)[None]  # (1, C, T, H, W)
    video = video.to(pipe.vae.device, pipe.vae.dtype)
    with torch.no_grad():
        z = pipe.vae.encode(video).latent_dist.sample(generator=torch.Generator().manual_seed(0))
    z = z * pipe.vae.config.scaling_factor
    return z.permute(0, 2, 1, 3, 4)  # (1, T', C, H', W')


class RewardWeightedTrainer:
    """Holds the frozen inputs and the LoRA-wrapped transformer; ``loss`` and ``train`` are the whole algorithm."""

    def __init__(self, pipe: Any, data: list[RewardedVideo], cfg: RWRConfig, *, progress: bool = True):
        import torch
        from peft import LoraConfig

        from promptloop.agents.video.media import read_video

        if not data:
            raise PromptloopError("no rewarded videos to train on (rate some, or collect pairs --video first)")
        self.pipe, self.cfg, self.progress = pipe, cfg, progress
        self.device = pipe.transformer.device
        torch.manual_seed(cfg.seed)
        max_text = getattr(pipe.transformer.config, "max_text_seq_length", 226)
        self.latents, self.embeds = [], []
        for d in data:
            frames, _ = read_video(d.path, max_frames=cfg.max_frames)
            self.latents.append(_latents(pipe, frames))
            with torch.no_grad():
                emb, _ = pipe.encode_prompt(d.prompt, do_classifier_free_guidance=False, max_sequence_length=max_text,
                                            device=self.device)
            self.embeds.append(emb)
        self.rewards = np.array([d.reward for d in data])
        self.weights = torch.tensor(sample_weights(self.rewards, cfg.weighting, cfg.temperature),
                                    dtype=torch.float32, device=self.device)
        pipe.transformer.requires_grad_(False)
        if ADAPTER in (getattr(pipe.transformer, "peft_config", None) or {}):
            pipe.transformer.delete_adapters(ADAPTER)  # a previous run in this process left its adapter
        pipe.transformer.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=True,
                                                target_modules=cfg.target_modules), adapter_name=ADAPTER)
        pipe.transformer.set_adapter(ADAPTER)
        self.params = [p for p in pipe.transformer.parameters() if p.requires_grad]
        self.video_ids = [d.video_id for d in data]

    def per_sample_loss(self, idx: list[int], generator: torch.Generator) -> torch.Tensor:
        """Diffusion loss of each sample in ``idx`` at a random timestep and noise drawn from ``generator``."""
        import torch

        sched = self.pipe.scheduler
        losses = []
        for i in idx:
            z = self.latents[i]
            t = torch.randint(0, sched.config.num_train_timesteps, (1,), generator=generator).to(self.device)
            noise = torch.randn(z.shape, generator=generator).to(z.device, z.dtype)
            noisy = sched.add_noise(z, noise, t)
            pred = self.pipe.transformer(hidden_states=noisy, encoder_hidden_states=self.embeds[i], timestep=t,
                                         return_dict=False)[0]
            target = sched.get_velocity(z, noise, t) if sched.config.prediction_type == "v_prediction" else noise
            losses.append(torch.mean((pred.float() - target.float()) ** 2))
        return torch.stack(losses)

    def weighted_loss(self, idx: list[int], generator: torch.Generator) -> torch.Tensor:
        w = self.weights[idx]
        return (w * self.per_sample_loss(idx, generator)).sum() / w.sum()

    def fixed_eval_loss(self, seed: int = 1234) -> float:
        """The weighted loss over every sample with fixed noise and timesteps: comparable before and after."""
        import torch

        with torch.no_grad():
            return float(self.weighted_loss(list(range(len(self.latents))), torch.Generator().manual_seed(seed)))

    def train(self) -> dict:
        import torch
        from tqdm.auto import tqdm

        cfg = self.cfg
        opt = torch.optim.AdamW(self.params, lr=cfg.learning_rate)
        gen = torch.Generator().manual_seed(cfg.seed)
        n = len(self.latents)
        before = self.fixed_eval_loss()
        curve, t0 = [], time.perf_counter()
        self.pipe.transformer.train()
        for _step in tqdm(range(cfg.steps), desc="rwr", unit="step", disable=not self.progress, leave=False):
            idx = torch.randperm(n, generator=gen)[:min(cfg.batch_size, n)].tolist()
            loss = self.weighted_loss(idx, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append(round(loss.item(), 6))
        self.pipe.transformer.eval()
        after = self.fixed_eval_loss()
        return {"eval_loss_before": round(before, 6), "eval_loss_after": round(after, 6), "loss_curve": curve,
                "steps": cfg.steps, "wall_s": round(time.perf_counter() - t0, 2), "samples": n,
                "weights": [round(float(w), 4) for w in self.weights], "rewards": [round(float(r), 4)
                                                                                   for r in self.rewards]}

    def save(self, out_dir: Path) -> Path:
        from peft.utils import get_peft_model_state_dict

        tmp = out_dir.with_name(out_dir.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        type(self.pipe).save_lora_weights(tmp, transformer_lora_layers=get_peft_model_state_dict(
            self.pipe.transformer, adapter_name=ADAPTER))
        tmp.replace(out_dir)
        return out_dir

    def close(self) -> None:
        """Take the training adapter off the pipeline, so the process renders with the base model again."""
        if ADAPTER in (getattr(self.pipe.transformer, "peft_config", None) or {}):
            self.pipe.transformer.delete_adapters(ADAPTER)


def run_rwr(engine: Engine, settings: Settings, renderer: DiffusersRenderer, cfg: RWRConfig, *,
            pipeline: Any = None, progress: bool = True) -> dict:
    """Train a LoRA on the configured video model from the store's rewarded videos and register it (algorithm 'rwr')."""
    from promptloop.store.versions import next_name, register

    data = rewarded_videos(engine, cfg.source)
    pipe = pipeline if pipeline is not None else renderer.pipeline
    name = cfg.name or next_name(engine, "rwr")
    out = settings.home / "video_loras" / name
    if out.exists():
        raise PromptloopError(f"{out} exists; video LoRAs are never overwritten")
    trainer = RewardWeightedTrainer(pipe, data, cfg, progress=progress)
    try:
        metrics = trainer.train()
        trainer.save(out)
    finally:
        trainer.close()  # the renderer shares this pipeline: it must not keep rendering with the training LoRA
    (out / "rwr.json").write_text(json.dumps({"config": asdict(cfg), "metrics": metrics,
                                              "video_ids": trainer.video_ids}, indent=2))
    register(engine, name=name, base_model=renderer.model_id, adapter_path=str(out), parent_id=None,
             algorithm="rwr", round_index=-1, metrics={k: v for k, v in metrics.items() if k != "loss_curve"}
             | {"first_loss": metrics["loss_curve"][0], "last_loss": metrics["loss_curve"][-1]},
             data_provenance={"video_ids": trainer.video_ids, "source": cfg.source, "weighting": cfg.weighting})
    if not math.isfinite(metrics["eval_loss_after"]):
        raise PromptloopError("reward-weighted training diverged (non-finite loss); lower the learning rate")
    return {"name": name, "path": str(out), **metrics}
