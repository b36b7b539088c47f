"""Learner configurations in TRL's style: one dataclass per algorithm, loadable from YAML, overridable by flags.

Only what a promptloop user tunes lives here; everything else is mapped onto
TRL's own ``SFTConfig`` / ``DPOConfig`` by the learner, so the defaults that
bite on CPU (bf16 on, 1e-6 DPO learning rate, gradient checkpointing) are set
explicitly rather than inherited.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from promptloop.errors import PromptloopError


class ConfigError(PromptloopError, ValueError):
    """A learner config file or flag that does not fit the dataclass."""


@dataclass
class LearnerConfig:
    # --- data (read from the store) ---
    round_index: int | None = None  # None = the latest round that has data of this kind
    data_rounds: Literal["current", "all"] = "current"  # this round only, or every round up to it
    parent: str = "champion"  # base | champion | version name: the adapter training starts from
    name: str | None = None  # version name; default r{round}-{algorithm}[-k]
    # --- optimisation ---
    learning_rate: float = 2e-4
    num_train_epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    warmup_steps: float = 0  # a number of steps, or a fraction (< 1) of the run
    weight_decay: float = 0.0
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = 25  # checkpoints a killed run resumes from
    bf16: bool | None = None  # None = on when CUDA supports it
    gradient_checkpointing: bool = False
    # --- LoRA (no embed_tokens / lm_head: vLLM cannot serve adapters that change them) ---
    lora_r: int = 16
    lora_alpha: int = 32
    # 0: peft then skips the dropout mask on every adapted input; at 0.05 drawing those masks was 13 % of a
    # LoRA step on the 2-core CPU (bench/train_step.py, CHANGELOG)
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                      "gate_proj", "up_proj", "down_proj"])

    algorithm = "base"

    def __post_init__(self) -> None:
        if self.data_rounds not in ("current", "all"):
            raise ConfigError(f"data_rounds must be 'current' or 'all', got {self.data_rounds!r}")
        for name in ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                     "lora_r", "lora_alpha"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ConfigError("set num_train_epochs > 0 or max_steps > 0")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SFTLearnerConfig(LearnerConfig):
    algorithm = "sft"
    completion_only_loss: bool = True  # learn the rewrite, not the instruction


@dataclass
class DPOLearnerConfig(LearnerConfig):
    algorithm = "dpo"
    learning_rate: float = 5e-5
    num_train_epochs: float = 2.0
    beta: float = 0.1
    loss_type: str = "sigmoid"
    # the frozen reference of the DPO loss: the parent version (the adapter training starts from), or the
    # anchor: the SFT version the DPO chain started from (RLHFlow's iterative DPO); see learners/dpo.py
    reference: Literal["parent", "anchor"] = "parent"
    # the reference's log-probs of every pair computed once before the first step (TRL's
    # precompute_ref_log_probs) instead of a reference forward in every step. It costs what one pass of
    # reference forwards costs, so it pays only when the run passes over its pairs more than once; "auto" turns it
    # on exactly then. Parent reference only: the anchor's weights are put in place after TRL built the trainer.
    precompute_ref_log_probs: bool | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ConfigError(f"beta must be positive, got {self.beta!r}")
        if self.reference not in ("parent", "anchor"):
            raise ConfigError(f"reference must be 'parent' or 'anchor', got {self.reference!r}")
        if self.precompute_ref_log_probs not in (True, False, "auto"):
            raise ConfigError(f"precompute_ref_log_probs must be true, false or auto, got "
                              f"{self.precompute_ref_log_probs!r}")

    def passes(self, rows: int) -> float:
        """How many times the run goes over ``rows`` pairs (per process)."""
        if self.max_steps > 0:
            return self.max_steps * self.per_device_train_batch_size * self.gradient_accumulation_steps / max(1, rows)
        return self.num_train_epochs

    def precompute_reference(self, rows: int) -> bool:
        """Whether the reference log-probs are computed once up front (see precompute_ref_log_probs)."""
        if self.reference != "parent":
            return False
        if self.precompute_ref_log_probs == "auto":
            return self.passes(rows) > 1.0
        return bool(self.precompute_ref_log_probs)


CONFIGS: dict[str, type[LearnerConfig]] = {"sft": SFTLearnerConfig, "dpo": DPOLearnerConfig}


def config_class(algorithm: str) -> type:
    """The config dataclass of a learner: sft, dpo (rewriter), critic, rwr (video model)."""
    if algorithm == "critic":
        from promptloop.learners.video_critic import CriticConfig

        return CriticConfig
    if algorithm == "rwr":
        from promptloop.learners.rwr import RWRConfig

        return RWRConfig
    if algorithm == "vlm_critic":
        from promptloop.learners.vlm_critic import VLMCriticConfig

        return VLMCriticConfig
    if algorithm not in CONFIGS:
        raise ConfigError(f"unknown algorithm '{algorithm}'; expected one of {', '.join([*CONFIGS, 'critic', 'rwr'])}")
    return CONFIGS[algorithm]


def load_config(algorithm: str, path: str | Path | None = None, **overrides: Any) -> LearnerConfig:
    """Defaults < YAML file < overrides (None = not given). Unknown keys are an error that names them."""
    cls = config_class(algorithm)
    values: dict[str, Any] = {}
    if path is not None:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"learner config not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of settings, got {type(loaded).__name__}")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {algorithm} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"bad {algorithm} config: {exc}") from None
