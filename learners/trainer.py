"""What SFT and DPO share: the policy (base + parent adapter), TRL arguments, saving and registering a version.

CPU: fp32 with ``use_cpu``; CUDA: bf16 autocast when supported; the same code
under ``accelerate launch`` for multi-GPU. A killed run resumes from its last
Trainer checkpoint in ``adapters/.work/<name>``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from promptloop.config import Settings
from promptloop.learners.config import LearnerConfig
from promptloop.learners.data import TrainingData, load_training_data
from promptloop.store.exporter import BuildMessages
from promptloop.store.models import ModelVersion
from promptloop.store.versions import ensure_base, get_version, next_name, register


@dataclass
class TrainResult:
    version: ModelVersion
    metrics: dict
    reused: bool = False


def use_cuda(settings: Settings) -> bool:
    from promptloop.agents.llm.device import pick_device

    return pick_device(settings.device) == "cuda"


def trl_common_args(cfg: LearnerConfig, output_dir: Path, *, cuda: bool) -> dict[str, Any]:
    import torch

    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    return dict(output_dir=str(output_dir), learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs,
                max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
                gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_length=cfg.max_length,
                warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, seed=cfg.seed,
                logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
                save_total_limit=1, bf16=bf16, fp16=False, use_cpu=not cuda,
                gradient_checkpointing=cfg.gradient_checkpointing, report_to="none", disable_tqdm=False)


def policy_dtype(settings: Settings) -> str:
    """bf16 base weights on a GPU that supports them (half the memory, the tensor cores' type); fp32 on CPU,
    where bf16 matmuls without AVX512-BF16 are slower than fp32 (the LoRA weights stay fp32 either way)."""
    import torch

    return "bfloat16" if use_cuda(settings) and torch.cuda.is_bf16_supported() else "float32"


def load_policy(settings: Settings, parent: ModelVersion, cfg: LearnerConfig) -> tuple[Any, Any, Any]:
    """The base model with the parent's adapter, trainable; a fresh LoRA config when the parent is the base."""
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptloop.agents.llm.prepare import prepare_model

    path = prepare_model(settings.base_model, settings.models_dir).path
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=policy_dtype(settings))
    if parent.adapter_path:
        return PeftModel.from_pretrained(model, parent.adapter_path, is_trainable=True), tok, None
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM")
    return model, tok, lora


def summarize_log(log_history: list[dict]) -> dict:
    steps = [h for h in log_history if "loss" in h]
    out: dict[str, Any] = {"loss_curve": [[h.get("step"), round(h["loss"], 5)] for h in steps]}
    if steps:
        out["first_loss"], out["last_loss"] = round(steps[0]["loss"], 5), round(steps[-1]["loss"], 5)
        for key in ("rewards/accuracies", "rewards/margins", "mean_token_accuracy"):
            vals = [h[key] for h in steps if key in h]
            if vals:
                out[f"last_{key.replace('/', '_')}"] = round(vals[-1], 5)
    final = [h for h in log_history if "train_loss" in h]
    if final:
        out["train_loss"] = round(final[-1]["train_loss"], 5)
        out["train_runtime_s"] = round(final[-1].get("train_runtime", 0.0), 2)
    return out


def _save_adapter(model: Any, final: Path) -> None:
    """Only the trained adapter ('default'), never TRL's frozen 'ref' copy; temp folder then rename."""
    tmp = final.parent / f".{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp), selected_adapters=["default"])
    os.replace(tmp, final)


BuildTrainer = Callable[[Any, Any, Any, Any, dict[str, Any]], Any]
OnStep = Callable[[int, int, dict], None]  # (optimizer step, total steps, the latest logged values)


def report_steps(trainer: Any, on_step: OnStep) -> None:
    """Send the trainer's progress to ``on_step`` instead of its own bar and printed log dicts.

    transformers' ProgressCallback writes every log as a dict line (also with
    its bar disabled); the caller's display shows the step, total and loss.
    """
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class StepReporter(TrainerCallback):
        def __init__(self) -> None:
            self.last: dict = {}

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            on_step(state.global_step, state.max_steps, self.last)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            self.last = {**self.last, **(logs or {})}
            on_step(state.global_step, state.max_steps, self.last)

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StepReporter())


def train(engine: Engine, settings: Settings, cfg: LearnerConfig, build_trainer: BuildTrainer, *,
          build_messages: BuildMessages, data: TrainingData | None = None, extra_metrics: dict | None = None,
          on_step: OnStep | None = None, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Read the data, train from the parent, save the adapter, register a candidate version.

    ``build_trainer(model, tokenizer, peft_config, dataset, args_common)`` returns a TRL trainer.
    ``callbacks`` are transformers ``TrainerCallback``s added to it (what a bench or tracker hooks in).
    With an explicit ``cfg.name`` that is already registered, nothing is trained again (the loop's resume).
    """
    from transformers.trainer_utils import get_last_checkpoint

    from promptloop.learners.data import to_dataset

    algo = cfg.algorithm
    if cfg.name:
        try:
            existing = get_version(engine, cfg.name)
        except LookupError:
            existing = None
        if existing is not None and existing.adapter_path and Path(existing.adapter_path).is_dir():
            return TrainResult(existing, existing.metrics, reused=True)
    if data is None:  # first: a run with nothing to train writes nothing (not even the base version's row)
        data = load_training_data(engine, algo, build_messages, round_index=cfg.round_index, scope=cfg.data_rounds,
                                  safety_share=settings.collect.safety_share)
    ensure_base(engine, settings.base_model)
    parent = get_version(engine, cfg.parent)
    name = cfg.name or next_name(engine, f"r{data.round_index}-{algo}")
    adapters = settings.adapters_dir
    adapters.mkdir(parents=True, exist_ok=True)
    work, final = adapters / ".work" / name, adapters / name
    if final.exists():
        raise FileExistsError(f"adapter folder {final} exists but no version '{name}' is registered; "
                              "remove the folder or pick another --name")
    model, tok, peft_config = load_policy(settings, parent, cfg)
    cuda = use_cuda(settings)
    trainer = build_trainer(model, tok, peft_config, to_dataset(data, algo), trl_common_args(cfg, work, cuda=cuda))
    if on_step is not None:
        report_steps(trainer, on_step)
    for callback in callbacks:
        trainer.add_callback(callback)
    t0 = time.perf_counter()
    last = get_last_checkpoint(str(work)) if work.is_dir() else None
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout is for results (--json)
        trainer.train(resume_from_checkpoint=last)
    metrics = {**summarize_log(trainer.state.log_history), "global_step": trainer.state.global_step,
               "wall_s": round(time.perf_counter() - t0, 2), "device": "cuda" if cuda else "cpu",
               "resumed_from": Path(last).name if last else None, "config": cfg.to_dict(), **(extra_metrics or {})}
    _save_adapter(trainer.model, final)
    version = register(engine, name=name, base_model=settings.base_model, adapter_path=str(final),
                       parent_id=parent.id, algorithm=algo, round_index=data.round_index, metrics=metrics,
                       data_provenance={**data.provenance, "parent": parent.name})
    shutil.rmtree(work, ignore_errors=True)
    return TrainResult(version, metrics)
