"""SFT of the rewriter on accepted VPO / evolution examples (TRL ``SFTTrainer``, LoRA).

Rows are conversational prompt/completion pairs, so the loss covers only the
rewrite (``completion_only_loss``), not the instruction template.
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


def train_sft(engine: Engine, settings: Settings, cfg: LearnerConfig | None = None, *, build_messages: BuildMessages,
              data: TrainingData | None = None, on_step: OnStep | None = None,
              callbacks: Sequence[Any] = ()) -> TrainResult:
    cfg = cfg or load_config("sft")

    def build(model: Any, tok: Any, peft_config: Any, dataset: Any, args: Any) -> Any:
        from trl import SFTTrainer

        return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                          peft_config=peft_config)

    return train(engine, settings, cfg, build, build_messages=build_messages, data=data, on_step=on_step,
                 callbacks=callbacks)
