"""DPO of the rewriter on preference pairs (TRL ``DPOTrainer``, LoRA).

The frozen reference is ``cfg.reference``:

- ``parent``: the version training starts from. With a parent adapter TRL
  keeps a frozen copy of it (its "ref" adapter) and trains the "default" one;
  from the base model, the reference is the base with the fresh adapter off.
- ``anchor``: the SFT version the DPO chain started from (the parent's nearest
  SFT ancestor; the base model if there is none), as RLHFlow's iterative DPO
  keeps the SFT model as reference across rounds. TRL's "ref" adapter is
  replaced by the anchor's (or removed, which makes TRL use the bare base).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Engine

from promptloop.config import Settings
from promptloop.learners.config import LearnerConfig, load_config
from promptloop.learners.data import TrainingData
from promptloop.learners.trainer import OnStep, TrainResult, train
from promptloop.store.exporter import BuildMessages
from promptloop.store.models import ModelVersion
from promptloop.store.versions import anchor, ensure_base, get_version


def reference_version(engine: Engine, settings: Settings, cfg: LearnerConfig) -> ModelVersion | None:
    """The version whose weights the DPO loss compares against; None = the bare base model."""
    ensure_base(engine, settings.base_model)
    parent = get_version(engine, cfg.run.parent)
    if cfg.reference == "anchor":
        return anchor(engine, parent)
    return parent if parent.adapter_path else None


def use_reference(model: Any, ref: ModelVersion | None) -> None:
    """Make TRL's "ref" adapter hold ``ref``'s weights (or drop it, so TRL falls back to the bare base)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):  # trained from the base: the reference is already the bare base
        return
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    if ref is not None:
        model.load_adapter(ref.adapter_path, adapter_name="ref", is_trainable=False)
    model.set_adapter("default")


def train_dpo(engine: Engine, settings: Settings, cfg: LearnerConfig | None = None, *, build_messages: BuildMessages,
              data: TrainingData | None = None, on_step: OnStep | None = None,
              callbacks: Sequence[Any] = ()) -> TrainResult:
    cfg = cfg or load_config("dpo")
    extra: dict[str, Any] = {}  # filled once the data is there and the trainer is built; registered with it

    def make_args(dataset: Any, run: dict[str, Any]) -> Any:
        ref = reference_version(engine, settings, cfg)
        precompute = cfg.precompute_reference(len(dataset))
        extra["reference"] = {"kind": cfg.reference, "version": ref.name if ref else "base",
                              "precomputed": precompute}
        out = cfg.training_args(**run, precompute_ref_batch_size=max(8, 2 * cfg.value("per_device_train_batch_size")))
        out.precompute_ref_log_probs = precompute  # decided above (never with the anchor, even when asked)
        return out

    def build(model: Any, tok: Any, peft_config: Any, dataset: Any, args: Any) -> Any:
        from trl import DPOTrainer

        trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                             peft_config=peft_config)
        if cfg.reference == "anchor":
            use_reference(trainer.model, reference_version(engine, settings, cfg))
        return trainer

    return train(engine, settings, cfg, build, build_messages=build_messages, data=data, extra_metrics=extra,
                 on_step=on_step, callbacks=callbacks, training_args=make_args)
