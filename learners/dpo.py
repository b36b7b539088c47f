"""DPO of the rewriter on preference pairs (TRL ``DPOTrainer``, LoRA).

The reference is the parent version: with a parent adapter TRL keeps a frozen
copy of it (the "ref" adapter) and trains the "default" one; from the base
model, the reference is the base with the fresh adapter switched off.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from promptloop.config import Settings
from promptloop.learners.config import DPOLearnerConfig
from promptloop.learners.data import TrainingData
from promptloop.learners.trainer import TrainResult, train
from promptloop.store.exporter import BuildMessages


def train_dpo(engine: Engine, settings: Settings, cfg: DPOLearnerConfig | None = None, *, build_messages: BuildMessages,
              data: TrainingData | None = None) -> TrainResult:
    cfg = cfg or DPOLearnerConfig()

    def build(model: Any, tok: Any, peft_config: Any, dataset: Any, common: dict[str, Any]) -> Any:
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**common, beta=cfg.beta, loss_type=[cfg.loss_type])
        return DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                          peft_config=peft_config)

    return train(engine, settings, cfg, build, build_messages=build_messages, data=data)
