"""A generative critic (LiFT-Critic's shape): a vision-language model fine-tuned with TRL to rate a video
and explain the rating.

Each rated video becomes one conversation: the user turn holds ``frames``
evenly sampled frames and the user's prompt, the assistant turn the people's
verdict as JSON, per dimension a score (the mean over raters, rounded to the
scale) and a rationale (a rater's own words). TRL's ``SFTTrainer`` trains
the model on the assistant turn (LoRA through peft when ``lora`` is on; a
full fine-tune otherwise). Any image-text-to-text model transformers loads
with ``AutoModelForImageTextToText`` and ``AutoProcessor`` works (LLaVA,
Qwen2-VL, Idefics3/SmolVLM ...), from a local folder or a hub id; on a GPU
that is a real VLM, in the tests a tiny LLaVA built from config.

Held-out videos are rated by generation and parsed back (agents/video/vlm_judge.py
``parse_judgement``): the report has the parse rate, per dimension Pearson
correlation and pairwise accuracy against people, and sample rationales.
``VLMCritic`` serves a saved critic as ``critic_<dimension>`` video dimensions
with rationales, the same names the feature-head critic uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.agents.video.media import read_video, sample_indices
from promptloop.agents.video.metrics import MetricResult
from promptloop.agents.video.vlm_judge import parse_judgement
from promptloop.config import Settings
from promptloop.errors import PromptloopError
from promptloop.learners.video_critic import VideoCritic, _corr, pairwise_accuracy, rated_videos
from promptloop.store.models import HumanRating

if TYPE_CHECKING:  # the embedder pulls in sentence-transformers; only its type is needed here
    from promptloop.agents.embedder import Embedder

INSTRUCTION = ("These are {k} frames of a generated video, in order. The user asked for: \"{prompt}\". "
               "Rate {dims} from {lo} to {hi} and explain each score in one sentence. Answer with JSON: "
               "{{\"<dimension>\": {{\"score\": <number>, \"rationale\": \"...\"}}}}.")


@dataclass
class VLMCriticConfig:
    model: str = ""  # local folder or hub id of an image-text-to-text model
    name: str | None = None
    frames: int = 4
    holdout: float = 0.25
    max_steps: int = 100
    learning_rate: float = 2e-4
    batch_size: int = 2
    lora: bool = True
    lora_rank: int = 16
    max_new_tokens: int = 160
    seed: int = 0


def rationales(engine: Engine, video_ids: list[int]) -> dict[tuple[int, str], str]:
    with Session(engine) as s:
        rows = s.exec(select(HumanRating).where(HumanRating.video_id.in_(video_ids)).order_by(HumanRating.id))
        out: dict[tuple[int, str], str] = {}
        for r in rows:
            if r.rationale:
                out.setdefault((r.video_id, r.dimension), r.rationale)
    return out


def _frames(path: str, k: int):
    from PIL import Image

    frames, _ = read_video(path)
    return [Image.fromarray(frames[i]) for i in sample_indices(len(frames), k)]


def _user_turn(k: int, prompt: str, dims: list[str], lo: float, hi: float) -> dict:
    text = INSTRUCTION.format(k=k, prompt=prompt, dims=", ".join(dims), lo=int(lo), hi=int(hi))
    return {"role": "user", "content": [*({"type": "image"} for _ in range(k)), {"type": "text", "text": text}]}


def verdict(targets: dict[str, float], why: dict[str, str], lo: float, hi: float) -> str:
    """People's verdict as the assistant's answer: scores back on the rating scale, rationales in their words."""
    return json.dumps({d: {"score": int(round(lo + t * (hi - lo))), "rationale": why.get(d, "")}
                       for d, t in targets.items()}, ensure_ascii=False)


def train_vlm_critic(engine: Engine, settings: Settings, cfg: VLMCriticConfig, *, progress: bool = True) -> dict:
    """Fine-tune ``cfg.model`` on the store's ratings with TRL, measure it on held-out videos, register it."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    from promptloop.store.versions import next_name, register

    if not cfg.model:
        raise PromptloopError("the VLM critic needs a model: a local folder or hub id of an image-text-to-text "
                              "model (e.g. a Qwen2-VL or LLaVA checkpoint)")
    r = settings.ratings
    dims = list(r.dimensions)
    data = rated_videos(engine, dims)
    if len(data) < 4:
        raise PromptloopError(f"the VLM critic needs ratings on at least 4 videos, the store has {len(data)}")
    name = cfg.name or next_name(engine, "vlm-critic")
    out = settings.home / "critics" / name
    if out.exists():
        raise PromptloopError(f"a critic folder exists at {out}; critics are never overwritten")
    try:
        processor = AutoProcessor.from_pretrained(cfg.model)
        model = AutoModelForImageTextToText.from_pretrained(cfg.model)
    except Exception as exc:  # noqa: BLE001
        raise PromptloopError(f"could not load VLM '{cfg.model}': {type(exc).__name__}: {exc}") from exc
    why = rationales(engine, [d.video_id for d in data])
    order = np.random.default_rng(cfg.seed).permutation(len(data))
    n_hold = max(2, int(round(cfg.holdout * len(data))))
    hold, train = [data[i] for i in order[:n_hold]], [data[i] for i in order[n_hold:]]
    rows = [{"messages": [_user_turn(cfg.frames, d.prompt, list(d.targets), r.scale_min, r.scale_max),
                          {"role": "assistant", "content": [{"type": "text", "text": verdict(
                              d.targets, {k: why.get((d.video_id, k), "") for k in d.targets}, r.scale_min,
                              r.scale_max)}]}],
             "images": _frames(d.path, cfg.frames)} for d in train]
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    cuda = torch.cuda.is_available()
    args = SFTConfig(output_dir=str(out.with_name(out.name + ".work")), max_steps=cfg.max_steps,
                     per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                     use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(), report_to="none",
                     save_strategy="no", logging_steps=1, gradient_checkpointing=False, max_length=None,
                     seed=cfg.seed, disable_tqdm=not progress)
    t0 = time.perf_counter()
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor,
                         peft_config=peft_config)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model = trainer.model.merge_and_unload() if cfg.lora else trainer.model
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    critic = VLMCritic(tmp, model=model, processor=processor, max_new_tokens=cfg.max_new_tokens, frames=cfg.frames)
    metrics = heldout_metrics(critic, hold, dims)
    metrics.update(first_loss=losses[0], last_loss=losses[-1], steps=len(losses), wall_s=round(
        time.perf_counter() - t0, 1), train_videos=len(train), heldout_videos=len(hold))
    (tmp / "critic.json").write_text(json.dumps({"kind": "vlm", "config": asdict(cfg), "dimensions": dims,
                                                 "scale": [r.scale_min, r.scale_max], "metrics": metrics}, indent=2))
    tmp.replace(out)
    register(engine, name=name, base_model=cfg.model, adapter_path=str(out), parent_id=None, algorithm="critic",
             round_index=-1, metrics=metrics, data_provenance={"heldout_video_ids": [d.video_id for d in hold],
                                                               "kind": "vlm", "config": asdict(cfg)})
    return {"name": name, "path": str(out), "losses": losses, **metrics}


def heldout_metrics(critic: VLMCritic, hold: list, dims: list[str]) -> dict:
    preds: dict[str, list[tuple[float, float]]] = {d: [] for d in dims}
    parsed, samples = 0, []
    for d in hold:
        frames, _ = read_video(d.path)
        res = critic.score(frames, d.prompt)
        parsed += any(m.score is not None for m in res.values())
        for dim, target in d.targets.items():
            m = res.get(f"critic_{dim}")
            if m is not None and m.score is not None:
                preds[dim].append((m.score, target))
        if len(samples) < 3:
            samples.append({"video_id": d.video_id, "answer": critic.last_answer[:300]})
    per = {}
    for dim, pairs in preds.items():
        p, t = np.array([x for x, _ in pairs]), np.array([y for _, y in pairs])
        per[dim] = {"n": len(pairs), "pearson": _corr(p, t) if len(pairs) >= 3 else None,
                    "pairwise_accuracy": pairwise_accuracy(p, t) if len(pairs) >= 2 else None}
    return {"parse_rate": round(parsed / max(1, len(hold)), 4), "dimensions": per, "samples": samples}


class VLMCritic:
    """A fine-tuned VLM critic as ``critic_<dimension>`` video dimensions, each with the model's rationale."""

    name = "vlm-critic"

    def __init__(self, path: str | Path, *, model: Any = None, processor: Any = None,
                 max_new_tokens: int = VLMCriticConfig.max_new_tokens,
                 frames: int | None = None):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.path = Path(path)
        meta_file = self.path / "critic.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        self.dims = meta.get("dimensions")
        self.scale = meta.get("scale", [1.0, 5.0])
        self.frames = frames or meta.get("config", {}).get("frames", 4)
        self.processor = processor or AutoProcessor.from_pretrained(self.path)
        self.model = (model or AutoModelForImageTextToText.from_pretrained(self.path)).eval()
        self.max_new_tokens = max_new_tokens
        self.last_answer = ""

    def score(self, frames: np.ndarray, prompt: str) -> dict[str, MetricResult]:
        import torch
        from PIL import Image

        from promptloop.config import RatingSettings

        dims = self.dims or list(RatingSettings().dimensions)
        lo, hi = self.scale
        images = [Image.fromarray(frames[i]) for i in sample_indices(len(frames), self.frames)]
        text = self.processor.apply_chat_template([_user_turn(len(images), prompt, dims, lo, hi)],
                                                  add_generation_prompt=True)
        inputs = self.processor(text=[text], images=images, return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        self.last_answer = self.processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        parsed = parse_judgement(self.last_answer)
        results = {}
        for d in dims:
            entry = parsed.get(d) if isinstance(parsed, dict) else None
            s = entry.get("score") if isinstance(entry, dict) else None
            name = f"critic_{d}"
            if not isinstance(s, int | float) or not lo <= s <= hi:
                results[name] = MetricResult(name, None, details={"reason": f"no {lo:g}-{hi:g} score for '{d}'",
                                                                  "answer": self.last_answer[:300]})
            else:
                results[name] = MetricResult(name, round((s - lo) / (hi - lo), 4), float(s),
                                             {"rationale": str(entry.get("rationale", "")), "critic": self.path.name})
        return results


def load_video_critic(path: Path, *, embedder: Callable[[], Embedder]) -> VideoCritic | VLMCritic:
    """A trained video critic from its folder: the ridge critic (``critic.npz``) or a fine-tuned VLM."""
    if not (path / "critic.npz").is_file() and (path / "config.json").is_file():
        return VLMCritic(path)  # train critic --backend vlm
    return VideoCritic(path, embedder=embedder())
