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

Training follows diffusers' training scripts on accelerate: gradient
accumulation (``accelerator.accumulate``), gradient-norm clipping, optional
gradient checkpointing, bf16 mixed precision on a GPU that has it, a
checkpoint every ``checkpointing_steps`` (LoRA, optimizer and sampling state
only, through accelerate's save hooks) that a re-run of the same name resumes,
and one process (the main one) saving and registering under ``accelerate
launch``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
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
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 1.0  # gradient-norm clipping (0 = off)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (GPU memory)
    mixed_precision: str = "auto"  # auto (bf16 on a GPU that has it, else no) | no | bf16 | fp16
    checkpointing_steps: int = 25  # a resumable checkpoint every this many optimizer steps (0 = none)
    checkpoints_total_limit: int = 1  # checkpoints kept
    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise PromptloopError(f"unknown weighting '{self.weighting}'; expected one of {', '.join(WEIGHTINGS)}")
        if self.source not in ("ratings", "judge"):
            raise PromptloopError(f"unknown reward source '{self.source}'; expected ratings or judge")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise PromptloopError(f"mixed_precision must be auto, no, bf16 or fp16, got '{self.mixed_precision}'")
        for key in ("steps", "batch_size", "gradient_accumulation_steps", "rank"):
            if getattr(self, key) < 1:
                raise PromptloopError(f"{key} must be at least 1, got {getattr(self, key)}")


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

    def __init__(self, pipe: Any, data: list[RewardedVideo], cfg: RWRConfig):
        import torch
        from peft import LoraConfig

        from promptloop.agents.video.media import read_video

        if not data:
            raise PromptloopError("no rewarded videos to train on (rate some, or collect pairs --video first)")
        self.pipe, self.cfg = pipe, cfg
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
        self.model = pipe.transformer  # what training calls: accelerate's wrapper (DDP) once prepared
        self.accelerator: Any = None

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
            model = self.model if self.model.training else self.pipe.transformer
            pred = model(hidden_states=noisy, encoder_hidden_states=self.embeds[i], timestep=t, return_dict=False)[0]
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

    def train(self, work_dir: Path | None = None, on_step: Callable[[int, int, float], None] | None = None) -> dict:
        """Train ``cfg.steps`` optimizer steps; with ``work_dir``, checkpoint there and resume from the newest
        checkpoint it holds. ``on_step(step, total, loss)`` after each optimizer step."""
        import torch
        from accelerate import Accelerator

        cfg = self.cfg
        cuda = self.device.type == "cuda"
        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
        acc = self.accelerator = Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                                             mixed_precision=mp, cpu=not cuda)
        self._register_state_hooks(acc)
        if cfg.gradient_checkpointing and hasattr(self.pipe.transformer, "enable_gradient_checkpointing"):
            self.pipe.transformer.enable_gradient_checkpointing()
        opt = torch.optim.AdamW(self.params, lr=cfg.learning_rate)
        self.model, opt = acc.prepare(self.pipe.transformer, opt)
        gen = torch.Generator().manual_seed(cfg.seed + acc.process_index)  # each process its own batches
        n = len(self.latents)
        before = self.fixed_eval_loss()
        start, curve, norms = 0, [], []
        from transformers.trainer_utils import (
            get_last_checkpoint,  # the text learners' resume finds theirs so
        )

        found = get_last_checkpoint(str(work_dir)) if work_dir is not None and work_dir.is_dir() else None
        latest = Path(found) if found else None
        if latest is not None:
            acc.load_state(str(latest))
            saved = torch.load(latest / f"rwr_state_{acc.process_index}.pt", weights_only=False)
            gen.set_state(saved["generator"])
            start, curve, norms = saved["step"], saved["loss_curve"], saved["grad_norms"]
        t0 = time.perf_counter()
        self.model.train()
        for step in range(start, cfg.steps):
            micro = []
            for _ in range(cfg.gradient_accumulation_steps):
                with acc.accumulate(self.model):
                    idx = torch.randperm(n, generator=gen)[:min(cfg.batch_size, n)].tolist()
                    loss = self.weighted_loss(idx, gen)
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm > 0:
                        norms.append(round(float(acc.clip_grad_norm_(self.params, cfg.max_grad_norm)), 6))
                    opt.step()  # accelerate skips it (and zero_grad) until the last micro-batch
                    opt.zero_grad()
                micro.append(loss.detach())
            step_loss = float(acc.gather(torch.stack(micro).mean()[None]).mean())
            curve.append(round(step_loss, 6))
            if on_step is not None and acc.is_main_process:
                on_step(step + 1, cfg.steps, step_loss)
            if work_dir is not None and cfg.checkpointing_steps and (step + 1) % cfg.checkpointing_steps == 0 \
                    and step + 1 < cfg.steps:
                self._checkpoint(acc, work_dir / f"checkpoint-{step + 1}", gen, step + 1, curve, norms)
        self.model.eval()
        after = self.fixed_eval_loss()
        return {"eval_loss_before": round(before, 6), "eval_loss_after": round(after, 6), "loss_curve": curve,
                "grad_norms": norms, "steps": cfg.steps, "resumed_from_step": start,
                "micro_batches": (cfg.steps - start) * cfg.gradient_accumulation_steps,
                "processes": acc.num_processes, "mixed_precision": mp,
                "wall_s": round(time.perf_counter() - t0, 2), "samples": n,
                "weights": [round(float(w), 4) for w in self.weights], "rewards": [round(float(r), 4)
                                                                                   for r in self.rewards]}

    def _checkpoint(self, acc: Any, folder: Path, gen: Any, step: int, curve: list, norms: list) -> None:
        """accelerate's state (the LoRA and the optimizer, through the hooks) plus this process's sampling state;
        older checkpoints beyond ``checkpoints_total_limit`` go."""
        import shutil

        import torch

        acc.save_state(str(folder))
        torch.save({"generator": gen.get_state(), "step": step, "loss_curve": list(curve), "grad_norms": list(norms)},
                   folder / f"rwr_state_{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            kept = sorted(folder.parent.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
            for old in kept[:-max(1, self.cfg.checkpoints_total_limit)]:
                shutil.rmtree(old, ignore_errors=True)

    def _register_state_hooks(self, acc: Any) -> None:
        """Checkpoints hold the LoRA only, not the whole transformer (diffusers' LoRA training scripts do the same)."""
        from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

        pipe_type = type(self.pipe)

        def save_hook(models: list, weights: list, output_dir: str) -> None:
            if acc.is_main_process:
                for m in models:
                    pipe_type.save_lora_weights(output_dir, transformer_lora_layers=get_peft_model_state_dict(
                        acc.unwrap_model(m), adapter_name=ADAPTER))
            while weights:
                weights.pop()

        def load_hook(models: list, input_dir: str) -> None:
            from diffusers.utils import convert_unet_state_dict_to_peft

            state = pipe_type.lora_state_dict(input_dir)
            state = state[0] if isinstance(state, tuple) else state
            lora = convert_unet_state_dict_to_peft({k.removeprefix("transformer."): v for k, v in state.items()
                                                    if k.startswith("transformer.")})
            while models:
                set_peft_model_state_dict(acc.unwrap_model(models.pop()), lora, adapter_name=ADAPTER)

        acc.register_save_state_pre_hook(save_hook)
        acc.register_load_state_pre_hook(load_hook)

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
            pipeline: Any = None, on_step: Callable[[int, int, float], None] | None = None) -> dict:
    """Train a LoRA on the configured video model from the store's rewarded videos and register it (algorithm
    'rwr'). A killed run of the same name resumes from its last checkpoint (``video_loras/.work/<name>``)."""
    import shutil

    from promptloop.store.versions import next_name, register

    data = rewarded_videos(engine, cfg.source)
    pipe = pipeline if pipeline is not None else renderer.pipeline
    name = cfg.name or next_name(engine, "rwr")
    out = settings.home / "video_loras" / name
    work = settings.home / "video_loras" / ".work" / name
    if out.exists():
        raise PromptloopError(f"{out} exists; video LoRAs are never overwritten")
    trainer = RewardWeightedTrainer(pipe, data, cfg)
    try:
        metrics = trainer.train(work, on_step=on_step)
        acc = trainer.accelerator
        if acc.is_main_process:
            trainer.save(out)
        acc.wait_for_everyone()
    finally:
        trainer.close()  # the renderer shares this pipeline: it must not keep rendering with the training LoRA
    if not acc.is_main_process:
        return {"name": name, "path": str(out), **metrics}
    (out / "rwr.json").write_text(json.dumps({"config": asdict(cfg), "metrics": metrics,
                                              "video_ids": trainer.video_ids}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    register(engine, name=name, base_model=renderer.model_id, adapter_path=str(out), parent_id=None,
             algorithm="rwr", round_index=-1, metrics={k: v for k, v in metrics.items() if k != "loss_curve"}
             | {"first_loss": metrics["loss_curve"][0], "last_loss": metrics["loss_curve"][-1]},
             data_provenance={"video_ids": trainer.video_ids, "source": cfg.source, "weighting": cfg.weighting})
    if not math.isfinite(metrics["eval_loss_after"]):
        raise PromptloopError("reward-weighted training diverged (non-finite loss); lower the learning rate")
    return {"name": name, "path": str(out), **metrics}
