"""Experiment trackers: transformers' own report_to integrations for training, and the same trackers for the
loop's per-round eval metrics, which no Trainer sees.

Training curves (loss, rewards/margins, rewards/accuracies, learning rate) are logged by the Trainer's callbacks;
tensorboard's writes under ``home/runs/<version>`` instead of the work folder a finished run deletes.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptloop.errors import PromptloopError

PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow"}


class TrackerUnavailable(PromptloopError, RuntimeError):
    """A tracker named in report_to whose package is not installed."""


def trackers(report_to: str | Sequence[str] | None) -> list[str]:
    """report_to as a list of tracker names ("none" and empty mean none; "all" is not resolved here)."""
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    return [n for n in names if n and n != "none"]


def prepare(names: Sequence[str], runs_dir: Path) -> None:
    """Before any run: every named tracker installed (else one line naming the package), trackio's files under
    ``runs_dir`` like TensorBoard's."""
    for name in names:
        package = PACKAGES.get(name, name)
        if importlib.util.find_spec(package) is None:
            raise TrackerUnavailable(f"report_to {name} needs the {package} package: pip install {package} "
                                     f"(or the promptloop[track] extra for tensorboard)")
    if "trackio" in names:
        os.environ.setdefault("TRACKIO_DIR", str(runs_dir / "trackio"))


def add_run_folder(trainer: Any, names: Sequence[str], run_dir: Path) -> None:
    """TensorBoard events into ``run_dir`` (kept), not into the Trainer's output folder (removed after saving)."""
    if "tensorboard" not in names:
        return
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    trainer.remove_callback(TensorBoardCallback)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer.add_callback(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir))))


def log_metrics(names: Sequence[str], *, runs_dir: Path, project: str, run: str, metrics: dict[str, Any],
                step: int) -> list[str]:
    """Numbers of ``metrics`` to each tracker as run ``run`` at ``step`` (the loop's round); the trackers written."""
    values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not values or not names:
        return []
    prepare(names, runs_dir)
    done: list[str] = []
    for name in names:
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(log_dir=str(runs_dir / run)) as writer:
                for key, v in values.items():
                    writer.add_scalar(key, v, global_step=step)
        elif name == "trackio":
            import trackio

            trackio.init(project=project, name=run, resume="allow")
            trackio.log(values, step=step)
            trackio.finish()
        elif name == "wandb":
            import wandb

            wandb.init(project=project, name=run, id=run, resume="allow")
            wandb.log(values, step=step)
            wandb.finish()
        elif name == "mlflow":
            import mlflow

            mlflow.set_experiment(project)
            with mlflow.start_run(run_name=run):
                mlflow.log_metrics(values, step=step)
        else:
            continue
        done.append(name)
    return done
