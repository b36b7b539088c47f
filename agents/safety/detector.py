"""The guard's harmful-vs-safe detector fine-tuned end to end (``guard.detector = "finetuned"``).

Why: a logistic regression on frozen MiniLM sentence embeddings mostly learns
the *topic* of a request, so harm in a scene it has seen benign passes ("a nurse
quietly switching an old patient's medicine for poison": 0.34 against 0.99). Out of
fold on the guard's training rows, the same MiniLM fine-tuned as a sequence
classifier flagged 93.4 % of harmful rows at 96.4 % benign pass, the logistic
one 86.3 % at 95.8 % (README, "The fourth pass"). It is trained once per set of
rows and settings and cached on disk by a hash of both, so a guard built again
(a fold, a test, a new process) loads it in about a second instead of training
for a minute.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from promptloop.config import GuardSettings


def cache_key(base: str, examples: Sequence[tuple[str, bool]], config: GuardSettings) -> str:
    """Same rows in the same order, same base model and settings: same detector."""
    blob = json.dumps([base, config.detector_epochs, config.detector_learning_rate, config.detector_seed,
                       [[t, bool(y)] for t, y in examples]])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class FineTunedDetector:
    """P(harmful) per text from a MiniLM sequence classifier fine-tuned on the guard's labelled rows."""

    def __init__(self, path: Path):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path = path
        with _quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()

    @classmethod
    def fit_or_load(cls, base: str, examples: Sequence[tuple[str, bool]], config: GuardSettings) -> FineTunedDetector:
        cache = Path(config.detector_cache).expanduser()
        target = cache / cache_key(base, examples, config)
        if not (target / "config.json").is_file():
            cache.mkdir(parents=True, exist_ok=True)
            # trained in a scratch folder and renamed into place, so a crash or a second process never leaves
            # a half-written detector that the next guard would load
            scratch = Path(tempfile.mkdtemp(dir=cache, prefix=".train-"))
            try:
                _train(base, examples, config, scratch)
                try:
                    scratch.rename(target)
                except OSError:  # another process finished first; its copy is the same training
                    shutil.rmtree(scratch, ignore_errors=True)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
        return cls(target)

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                       max_length=128, return_tensors="pt")
                out.append(torch.softmax(self.model(**batch).logits.float(), -1)[:, 1].numpy())
        return np.concatenate(out) if out else np.zeros(0)


def _train(base: str, examples: Sequence[tuple[str, bool]], config: GuardSettings, out: Path) -> None:
    """transformers' Trainer on (text, harmful) rows; writes the model and tokenizer to ``out``. Quiet: its
    bars, printed log dicts and the new head's notice would land in the middle of a command's output."""
    import warnings

    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    with _quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
        encoded = tokenizer([t for t, _ in examples], truncation=True, max_length=128)
        data = Dataset.from_dict({**encoded, "label": [int(y) for _, y in examples]})
        args = TrainingArguments(output_dir=str(out / "run"), num_train_epochs=config.detector_epochs,
                                 learning_rate=config.detector_learning_rate, per_device_train_batch_size=16,
                                 weight_decay=0.01, seed=config.detector_seed, report_to="none", save_strategy="no",
                                 logging_strategy="no", disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        with _step_bar(trainer, f"training the guard's request detector once ({len(examples)} rows; cached in "
                                f"{Path(config.detector_cache).expanduser()})"):
            trainer.train()
        shutil.rmtree(out / "run", ignore_errors=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


@contextmanager
def _step_bar(trainer: Any, description: str) -> Iterator[None]:
    """A bar of optimizer steps on stderr (stdout is for results), in place of the trainer's own."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers import TrainerCallback

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None)

        class Steps(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                bar.update(task, completed=state.global_step, total=state.max_steps)

        trainer.add_callback(Steps())
        yield


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' verbosity at error and its bars off, for the block only."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
