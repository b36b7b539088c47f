"""What SFT and DPO share: the policy (base + parent adapter), TRL arguments, saving and registering a version.

CPU: fp32 with ``use_cpu``; CUDA: bf16 autocast when supported; the same code
under ``accelerate launch`` for multi-GPU. A killed run resumes from its last
Trainer checkpoint in ``adapters/.work/<name>``.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from promptloop.agents.llm.prepare import hub_id
from promptloop.config import Settings
from promptloop.errors import PromptloopError
from promptloop.learners.config import LearnerConfig
from promptloop.learners.data import TrainingData, load_training_data
from promptloop.learners.tracking import add_run_folder, trackers
from promptloop.learners.tracking import prepare as prepare_trackers
from promptloop.store.cards import version_card, write_card
from promptloop.store.exporter import BuildMessages
from promptloop.store.models import ModelVersion
from promptloop.store.versions import ensure_base, get_version, next_name, register


class LearnerSetupError(PromptloopError, RuntimeError):
    """A training option this machine cannot run (QLoRA without a GPU or bitsandbytes)."""


@dataclass
class TrainResult:
    version: ModelVersion
    metrics: dict
    reused: bool = False
    main: bool = True  # False on the other processes of a multi-process (accelerate) run: they print nothing


def is_main_process() -> bool:
    """Rank 0, or a plain single process (accelerate launch sets RANK); what prints and writes."""
    return int(os.environ.get("RANK", "0")) == 0


def use_cuda(settings: Settings) -> bool:
    from promptloop.agents.llm.device import pick_device

    return pick_device(settings.device) == "cuda"


def policy_dtype(settings: Settings) -> str:
    """bf16 base weights on a GPU that supports them (half the memory, the tensor cores' type); fp32 on CPU,
    where bf16 matmuls without AVX512-BF16 are slower than fp32 (the LoRA weights stay fp32 either way)."""
    import torch

    return "bfloat16" if use_cuda(settings) and torch.cuda.is_bf16_supported() else "float32"


def check_quantization(cuda: bool) -> None:
    """QLoRA needs bitsandbytes' CUDA kernels: say so before any weight loads."""
    import importlib.util

    if not cuda:
        raise LearnerSetupError("load_in_4bit / load_in_8bit (QLoRA) needs a CUDA GPU; this run is on the CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise LearnerSetupError("load_in_4bit / load_in_8bit (QLoRA) needs bitsandbytes: pip install bitsandbytes")


def load_policy(settings: Settings, parent: ModelVersion, cfg: LearnerConfig) -> tuple[Any, Any, Any]:
    """The base model with the parent's adapter, trainable; a fresh LoRA config when the parent is the base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptloop.agents.llm.prepare import prepare_model

    quantized = cfg.model.load_in_4bit or cfg.model.load_in_8bit
    # ModelConfig's attn_implementation (recipe key or --attn_implementation): None keeps transformers' choice
    attn = {"attn_implementation": cfg.model.attn_implementation} if cfg.model.attn_implementation else {}
    path = prepare_model(settings.base_model, settings.models_dir).path
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if quantized:  # QLoRA: the frozen base in 4 (or 8) bits, the adapter in bf16, as TRL's scripts load it
        from peft import prepare_model_for_kbit_training
        from trl import get_kbit_device_map, get_quantization_config

        model = AutoModelForCausalLM.from_pretrained(path, dtype="bfloat16",
                                                     quantization_config=get_quantization_config(cfg.model),
                                                     device_map=get_kbit_device_map(), **attn)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=policy_dtype(settings), **attn)
    if parent.adapter_path:
        return PeftModel.from_pretrained(model, parent.adapter_path, is_trainable=True), tok, None
    return model, tok, cfg.lora_config()


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


def _save_adapter(trainer: Any, final: Path, state: Any) -> None:
    """The trained adapter through ``trainer.save_model`` (every process calls it: it gathers ZeRO-3 / FSDP
    shards; only the main one writes), never TRL's frozen 'ref' copy; into a temp folder, renamed by the main
    process once every process is past the save."""
    from peft import PeftModel

    tmp = final.parent / f".{final.name}.tmp"
    if state.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    state.wait_for_everyone()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel) and "ref" in model.peft_config:
        model.delete_adapter("ref")  # training is over; the reference is the parent's own folder
    trainer.save_model(str(tmp))
    state.wait_for_everyone()
    if state.is_main_process:
        os.replace(tmp, final)


BuildTrainer = Callable[[Any, Any, Any, Any, Any], Any]  # (model, tokenizer, peft_config, dataset, args)
TrainingArgs = Callable[[Any, dict[str, Any]], Any]  # (dataset, run) -> the TRL config
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


def _trained(engine: Engine, name: str | None) -> ModelVersion | None:
    """The version ``name`` when it is registered with its adapter on disk: trained already (the loop's resume)."""
    if not name:
        return None
    try:
        existing = get_version(engine, name)
    except LookupError:
        return None
    return existing if existing.adapter_path and Path(existing.adapter_path).is_dir() else None


def _training_data(engine: Engine, settings: Settings, cfg: LearnerConfig, build_messages: BuildMessages
                   ) -> TrainingData:
    return load_training_data(engine, cfg.algorithm, build_messages, round_index=cfg.run.round_index,
                              scope=cfg.run.data_rounds, safety_share=settings.collect.safety_share)


def plan(engine: Engine, settings: Settings, cfg: LearnerConfig, *, build_messages: BuildMessages) -> dict[str, Any]:
    """What ``train`` would do for ``cfg``, writing nothing (``--dry-run``): data, parent, name, optimizer steps."""
    if _trained(engine, cfg.run.name) is not None:
        return {"algorithm": cfg.algorithm, "name": cfg.run.name, "reused": True}
    data = _training_data(engine, settings, cfg, build_messages)
    try:
        parent = get_version(engine, cfg.run.parent).name
    except LookupError:
        if cfg.run.parent not in ("base", "champion"):
            raise
        parent = "base"  # registered on the first real run
    rows = len(data.rows)
    per_step = cfg.value("per_device_train_batch_size") * cfg.value("gradient_accumulation_steps")
    steps = cfg.value("max_steps") if cfg.value("max_steps") > 0 else math.ceil(
        math.ceil(rows / per_step) * cfg.value("num_train_epochs"))
    return {"algorithm": cfg.algorithm,
            "name": cfg.run.name or next_name(engine, f"r{data.round_index}-{cfg.algorithm}"),
            "parent": parent, "round": data.round_index, "data_rounds": cfg.run.data_rounds, "rows": rows,
            "steps": steps, "device": "cuda" if use_cuda(settings) else "cpu", "provenance": data.provenance,
            "config": cfg.to_dict(), "reused": False}


def train(engine: Engine, settings: Settings, cfg: LearnerConfig, build_trainer: BuildTrainer, *,
          build_messages: BuildMessages, data: TrainingData | None = None, extra_metrics: dict | None = None,
          on_step: OnStep | None = None, callbacks: Sequence[Any] = (),
          training_args: TrainingArgs | None = None) -> TrainResult:
    """Read the data, train from the parent, save the adapter, register a candidate version.

    ``training_args(dataset, run)`` makes the TRL config (default ``cfg.training_args(**run)``: output folder,
    device, trackers, run name), before the model loads, as DeepSpeed ZeRO-3's init needs;
    ``build_trainer(model, tokenizer, peft_config, dataset, args)`` returns the TRL trainer.

    Under ``accelerate launch`` every process trains; the main one picks the version name (broadcast), writes the
    adapter, registers the version and cleans up, and the others wait for it (barriers) and return its row.
    ``callbacks`` are transformers ``TrainerCallback``s added to it (what a bench or tracker hooks in).
    With an explicit ``cfg.run.name`` that is already registered, nothing is trained again (the loop's resume).
    """
    from accelerate import PartialState
    from transformers.trainer_utils import get_last_checkpoint

    from promptloop.learners.data import to_dataset

    algo = cfg.algorithm
    cuda = use_cuda(settings)
    if cfg.model.load_in_4bit or cfg.model.load_in_8bit:
        check_quantization(cuda)  # before anything loads or is written
    state = PartialState(cpu=not cuda)  # the process group under accelerate launch; else this one process
    main = state.is_main_process
    existing = _trained(engine, cfg.run.name)
    if existing is not None:
        return TrainResult(existing, existing.metrics, reused=True, main=main)
    if data is None:  # first: a run with nothing to train writes nothing (not even the base version's row)
        data = _training_data(engine, settings, cfg, build_messages)
    with state.main_process_first():  # one process writes the base version's row, the others then read it
        ensure_base(engine, settings.base_model)
    parent = get_version(engine, cfg.run.parent)
    name = cfg.run.name or _agreed(state, next_name(engine, f"r{data.round_index}-{algo}") if main else None)
    adapters = settings.adapters_dir
    work, final = adapters / ".work" / name, adapters / name
    if final.exists():
        raise FileExistsError(f"adapter folder {final} exists but no version '{name}' is registered; "
                              "remove the folder or pick another --name")
    state.wait_for_everyone()  # every process checked before the main one creates anything
    if main:
        adapters.mkdir(parents=True, exist_ok=True)
    report_to = trackers(cfg.training.get("report_to", settings.tracking.report_to))
    prepare_trackers(report_to, settings.runs_dir)
    dataset = to_dataset(data, algo)
    run = {"output_dir": work, "cuda": cuda, "report_to": report_to or "none", "run_name": name}
    args = (training_args or (lambda _ds, r: cfg.training_args(**r)))(dataset, run)
    model, tok, peft_config = load_policy(settings, parent, cfg)
    trainer = build_trainer(model, tok, peft_config, dataset, args)
    if main:
        add_run_folder(trainer, report_to, settings.runs_dir / name)
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
               "processes": state.num_processes, "resumed_from": Path(last).name if last else None,
               "config": cfg.to_dict(), **(extra_metrics or {})}
    _save_adapter(trainer, final, state)
    if main:
        version = register(engine, name=name, base_model=settings.base_model, adapter_path=str(final),
                           parent_id=parent.id, algorithm=algo, round_index=data.round_index, metrics=metrics,
                           data_provenance={**data.provenance, "parent": parent.name})
        write_card(final, version_card(engine, version, base_hub_id=hub_id(settings.base_model)))
        shutil.rmtree(work, ignore_errors=True)
    state.wait_for_everyone()
    if not main:
        version = get_version(engine, name)
    return TrainResult(version, metrics, main=main)


def _agreed(state: Any, value: Any) -> Any:
    """The main process's ``value`` on every process."""
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]
