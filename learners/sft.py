"""SFT of the rewriter on accepted VPO / evolution examples (TRL ``SFTTrainer``, LoRA).

Rows are conversational prompt/completion pairs, so the loss covers only the
rewrite (``completion_only_loss``), not the instruction template.
"""

from __future__ import annotations

from promptloop.learners.config import SFTLearnerConfig
from promptloop.learners.trainer import TrainResult, train


def train_sft(rt, cfg: SFTLearnerConfig | None = None, **kwargs) -> TrainResult:  # noqa: ANN001, ANN003
    cfg = cfg or SFTLearnerConfig()

    def build(model, tok, peft_config, dataset, common):  # noqa: ANN001, ANN202
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**common, completion_only_loss=cfg.completion_only_loss)
        return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                          peft_config=peft_config)

    return train(rt, cfg, build, **kwargs)
