"""DPO of the rewriter on preference pairs (TRL ``DPOTrainer``, LoRA).

The reference is the parent version: with a parent adapter TRL keeps a frozen
copy of it (the "ref" adapter) and trains the "default" one; from the base
model, the reference is the base with the fresh adapter switched off.
"""

from __future__ import annotations

from promptloop.learners.config import DPOLearnerConfig
from promptloop.learners.trainer import TrainResult, train


def train_dpo(rt, cfg: DPOLearnerConfig | None = None, **kwargs) -> TrainResult:  # noqa: ANN001, ANN003
    cfg = cfg or DPOLearnerConfig()

    def build(model, tok, peft_config, dataset, common):  # noqa: ANN001, ANN202
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**common, beta=cfg.beta, loss_type=[cfg.loss_type])
        return DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                          peft_config=peft_config)

    return train(rt, cfg, build, **kwargs)
