"""Learner configurations are TRL's: ``TrlParser`` over promptloop's own arguments, ``SFTConfig`` / ``DPOConfig``
and TRL's ``ModelConfig`` (the LoRA fields), as TRL's and open-r1's scripts parse theirs.

Any TRL or transformers training key (``lr_scheduler_type``, ``optim``, ``report_to``, ...) works in a recipe or as
a ``--key value`` flag. promptloop sets a few defaults above TRL's (``LEARNER_DEFAULTS``: the ones that bite on
CPU, such as bf16, TRL's 1e-6 DPO learning rate and gradient checkpointing); a recipe overrides them and flags
override the recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

from promptloop.errors import PromptloopError


class ConfigError(PromptloopError, ValueError):
    """A learner config file or flag that does not fit the dataclass."""


@dataclass
class PromptloopArguments:
    """What a promptloop learner run needs besides TRL's arguments: which data, which parent, which name."""

    round_index: int | None = field(default=None, metadata={
        "help": "Round whose data to train on; default: the latest round that has data of this kind."})
    data_rounds: str = field(default="current", metadata={
        "help": "current: that round's rows only; all: every round up to it.", "choices": ["current", "all"]})
    parent: str = field(default="champion", metadata={
        "help": "The version training starts from: base, champion or a version name."})
    name: str | None = field(default=None, metadata={"help": "Version name; default r<round>-<algorithm>[-k]."})


@dataclass
class DPOPromptloopArguments(PromptloopArguments):
    reference: str = field(default="parent", metadata={
        "help": "The DPO loss's frozen reference: parent (the version training starts from) or anchor (the SFT "
                "version the DPO chain started from, as RLHFlow's iterative DPO).", "choices": ["parent", "anchor"]})


# promptloop's defaults over TRL's, per algorithm (TRL's own defaults hold for every key not named here)
_COMMON: dict[str, Any] = {
    "num_train_epochs": 2.0, "per_device_train_batch_size": 4, "max_length": 512, "logging_steps": 1,
    "save_strategy": "steps", "save_steps": 25, "save_total_limit": 1,  # checkpoints a killed run resumes from
    # report_to: unset, so settings' tracking.report_to decides (none by default); a recipe or flag wins
    # LoRA without embed_tokens / lm_head (vLLM cannot serve adapters that change them). Dropout 0: peft then skips
    # the dropout mask on every adapted input; at 0.05 drawing those masks was 13 % of a LoRA step on the 2-core
    # CPU (bench/train_step.py, CHANGELOG)
    "use_peft": True, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
    "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
LEARNER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": {**_COMMON, "learning_rate": 2e-4, "completion_only_loss": True},  # learn the rewrite, not the template
    "dpo": {**_COMMON, "learning_rate": 5e-5, "beta": 0.1},
}


def _classes(algorithm: str) -> tuple[type, type, type]:
    from trl import DPOConfig, ModelConfig, SFTConfig

    if algorithm == "sft":
        return PromptloopArguments, SFTConfig, ModelConfig
    return DPOPromptloopArguments, DPOConfig, ModelConfig


def _parser(types: tuple[type, ...]) -> Any:
    """TrlParser whose errors are ConfigErrors naming the key (argparse would print its usage and exit)."""
    from trl import TrlParser

    class Parser(TrlParser):
        def error(self, message: str) -> NoReturn:
            raise ConfigError(message)

    return Parser(types)


@dataclass
class LearnerConfig:
    """One rewriter learner run: promptloop's arguments, the TRL training keys set above TRL's defaults, LoRA."""

    algorithm: str
    run: PromptloopArguments
    training: dict[str, Any]  # SFTConfig / DPOConfig keys set by promptloop's defaults, the recipe or flags
    model: Any  # trl.ModelConfig

    @property
    def reference(self) -> str:
        """DPO's reference; SFT's arguments have none (its value would be the parent)."""
        return getattr(self.run, "reference", "parent")

    def value(self, key: str) -> Any:
        """A training key's value: set here, or TRL's default."""
        if key in self.training:
            return self.training[key]
        f = {f.name: f for f in fields(_classes(self.algorithm)[1])}[key]
        return f.default if f.default is not dataclasses.MISSING else f.default_factory()

    def training_args(self, output_dir: Path, *, cuda: bool, **extra: Any) -> Any:
        """The TRL config of the run; bf16 follows the device unless a recipe or flag set it.

        ``extra`` holds what the learner decides at run time (trackers, run name, ...); a key the recipe or a flag
        set is not overridden."""
        import torch

        values = {**extra, **self.training, "output_dir": str(output_dir), "use_cpu": not cuda}
        if "bf16" not in self.training:
            values["bf16"] = bool(cuda and torch.cuda.is_bf16_supported())
        values.setdefault("fp16", False)
        return _classes(self.algorithm)[1](**values)

    def lora_config(self) -> Any:
        from trl import get_peft_config

        return get_peft_config(self.model)

    def passes(self, rows: int) -> float:
        """How many times the run goes over ``rows`` rows (per process)."""
        if self.value("max_steps") > 0:
            batch = self.value("per_device_train_batch_size") * self.value("gradient_accumulation_steps")
            return self.value("max_steps") * batch / max(1, rows)
        return float(self.value("num_train_epochs"))

    def precompute_reference(self, rows: int) -> bool:
        """Whether DPO's reference log-probs are computed once up front (TRL's precompute_ref_log_probs).

        It costs one pass of reference forwards, so it pays only when the run passes over its pairs more than once;
        unless a recipe or flag sets it, it is on exactly then. Parent reference only: the anchor's weights are put
        in place after TRL built the trainer.
        """
        if self.reference != "parent":
            return False
        if "precompute_ref_log_probs" in self.training:
            return bool(self.training["precompute_ref_log_probs"])
        return self.passes(rows) > 1.0

    def to_dict(self) -> dict[str, Any]:
        """What a version records of its training config (and its model card shows)."""
        lora = {f.name: v for f in fields(self.model) if f.name.startswith(("lora_", "use_", "load_in_"))
                and (v := getattr(self.model, f.name)) is not None and v is not False}
        return {"algorithm": self.algorithm, **dataclasses.asdict(self.run), **_jsonable(self.training), **lora}


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in values.items()}


def _validate(cfg: LearnerConfig) -> None:
    if cfg.run.data_rounds not in ("current", "all"):
        raise ConfigError(f"data_rounds must be 'current' or 'all', got {cfg.run.data_rounds!r}")
    if cfg.reference not in ("parent", "anchor"):
        raise ConfigError(f"reference must be 'parent' or 'anchor', got {cfg.reference!r}")
    t = cfg.training
    for key in ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length"):
        if key in t and t[key] is not None and t[key] <= 0:
            raise ConfigError(f"{key} must be positive, got {t[key]!r}")
    if cfg.value("max_steps") <= 0 and cfg.value("num_train_epochs") <= 0:
        raise ConfigError("set num_train_epochs > 0 or max_steps > 0")
    if cfg.algorithm == "dpo" and cfg.value("beta") <= 0:
        raise ConfigError(f"beta must be positive, got {cfg.value('beta')!r}")
    if not cfg.model.use_peft:
        raise ConfigError("use_peft must stay true: promptloop versions are LoRA adapters on the base model")
    if not 0 <= cfg.model.lora_dropout < 1:
        raise ConfigError(f"lora_dropout must be in [0, 1), got {cfg.model.lora_dropout!r}")
    if cfg.model.model_name_or_path:
        raise ConfigError("model_name_or_path is the store's base model (settings base_model), not a learner key")


def _read_recipe(path: Path) -> dict[str, Any]:
    import os

    import yaml

    if not path.is_file():
        raise ConfigError(f"learner config not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, got {type(loaded).__name__}")
    for key, value in (loaded.pop("env", None) or {}).items():  # TrlParser's `env:` block
        os.environ[str(key)] = str(value)
    return loaded


def _rewriter_config(algorithm: str, recipe: dict[str, Any], overrides: dict[str, Any],
                     args: list[str]) -> LearnerConfig:
    """Defaults < promptloop's defaults < recipe < keyword overrides < ``--key value`` args, through TrlParser."""
    types = _classes(algorithm)
    parser = _parser(types)
    layered = {**LEARNER_DEFAULTS[algorithm], **recipe, **overrides}
    # No activation (gradient) checkpointing by default: TRL turns it on, and on a 135M model it only costs time.
    # Under the current name where transformers has it (the old one warns), unless the recipe or a flag set either.
    names = ("activation_checkpointing", "gradient_checkpointing")
    if not any(n in layered or any(a.lstrip("-").replace("-", "_").split("=")[0] == n for a in args) for n in names):
        layered[names[0] if names[0] in _dests(parser) else names[1]] = False
    if "loss_type" in layered and isinstance(layered["loss_type"], str):  # TRL takes a list of losses
        layered["loss_type"] = [layered["loss_type"]]
    unknown = sorted(set(layered) - _dests(parser))
    if unknown:
        raise ConfigError(f"unknown {algorithm} setting(s): {', '.join(unknown)}; any key of promptloop's arguments, "
                          f"TRL's {types[1].__name__} or ModelConfig works (promptloop train {algorithm} --help)")
    _check_types(parser, {**recipe, **overrides})
    parser.set_defaults_with_config(**layered)
    ns, rest = parser.parse_known_args(list(args))
    if rest:
        raise ConfigError(f"unknown {algorithm} flag(s): {' '.join(rest)}")
    values, unflagged = vars(ns), vars(parser.parse_known_args([])[0])
    explicit = set(layered) | {k for k, v in values.items() if v != unflagged[k]}

    def build(cls: type, only_explicit: bool = False) -> Any:
        names = {f.name for f in fields(cls) if f.init}
        return {k: values[k] for k in names if k in values and (not only_explicit or k in explicit)}

    try:
        cfg = LearnerConfig(algorithm, types[0](**build(types[0])), build(types[1], only_explicit=True),
                            types[2](**build(types[2])))
        _validate(cfg)
        cfg.training_args(Path("unused"), cuda=False)  # TRL's and transformers' own checks, now, not mid-run
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad {algorithm} config: {exc}") from None
    return cfg


def _check_types(parser: argparse.ArgumentParser, values: dict[str, Any]) -> None:
    """What argparse checks on a flag, checked on a recipe's values too (TrlParser takes them as defaults, unchecked)."""
    actions = {a.dest: a for a in parser._actions}
    for key, value in values.items():
        a = actions[key]
        if value is None:
            continue
        if a.choices is not None and not isinstance(value, list) and str(getattr(value, "value", value)) not in {
                str(getattr(c, "value", c)) for c in a.choices}:
            raise ConfigError(f"{key} must be one of {', '.join(str(getattr(c, 'value', c)) for c in a.choices)}; "
                              f"got {value!r}")
        kind = getattr(a.type, "__name__", "")
        if kind == "string_to_bool" and not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        if a.type in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{key} must be a number, got {value!r}")


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions}


def config_class(algorithm: str) -> type:
    """The config dataclass of the promptloop-only learners: critic, rwr (video model), vlm_critic."""
    if algorithm == "critic":
        from promptloop.learners.video_critic import CriticConfig

        return CriticConfig
    if algorithm == "rwr":
        from promptloop.learners.rwr import RWRConfig

        return RWRConfig
    if algorithm == "vlm_critic":
        from promptloop.learners.vlm_critic import VLMCriticConfig

        return VLMCriticConfig
    raise ConfigError(f"unknown algorithm '{algorithm}'; expected one of sft, dpo, critic, rwr, vlm_critic")


def load_config(algorithm: str, path: str | Path | None = None, args: list[str] | tuple[str, ...] = (),
                **overrides: Any) -> Any:
    """A learner's config: defaults < YAML recipe < ``overrides`` (None = not given) < ``args`` (``--key value``).

    sft and dpo parse through TrlParser (``LearnerConfig``); the other learners are promptloop dataclasses.
    Unknown keys are an error that names them.
    """
    recipe = _read_recipe(Path(path)) if path is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    if algorithm in LEARNER_DEFAULTS:
        return _rewriter_config(algorithm, recipe, given, list(args))
    cls = config_class(algorithm)
    if args:
        raise ConfigError(f"{algorithm} takes no extra flags: {' '.join(args)}")
    values = {**recipe, **given}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {algorithm} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"bad {algorithm} config: {exc}") from None
