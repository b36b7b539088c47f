"""Progress bars shared by the commands and the loop (rich, on stderr)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(console: Console, *extra: ProgressColumn) -> Progress:
    """Spinner, description, bar, done/total, then ``extra`` columns, elapsed and remaining time."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra,
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console)


@contextmanager
def collection_progress(description: str, total: int, found_key: str, *, console: Console | None = None
                        ) -> Iterator[Callable[[int, dict], None]]:
    """A bar of prompts done with what was found and the rate; yields the driver's ``on_chunk`` callback."""
    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    found = {"n": 0}
    with progress_bar(console, TextColumn("{task.fields[found]} " + found_key),
                      TextColumn("{task.fields[rate]}")) as progress:
        task = progress.add_task(description, total=total, found=0, rate="")

        def on_chunk(done: int, stored: dict) -> None:
            found["n"] += stored.get(found_key, 0)
            progress.advance(task, done)
            t = progress.tasks[0]
            progress.update(task, found=found["n"],
                            rate=f"{t.completed / max(1e-9, time.perf_counter() - t0) * 60:.1f} prompts/min")

        yield on_chunk


@contextmanager
def training_progress(description: str, *, console: Console | None = None, enabled: bool = True
                      ) -> Iterator[Callable[[int, int, dict], None]]:
    """A bar of optimizer steps with the latest loss; yields the learner's ``on_step(step, total, logs)``.

    ``enabled=False`` (the other processes of an accelerate run) draws nothing."""
    console = console or Console(stderr=True)
    if not enabled:
        yield lambda step, total, logs: None
        return
    with progress_bar(console, TextColumn("{task.fields[loss]}")) as progress:
        task = progress.add_task(description, total=None, loss="")

        def on_step(step: int, total: int, logs: dict) -> None:
            loss = logs.get("loss")
            progress.update(task, completed=step, total=total or None,
                            **({"loss": f"loss {float(loss):.3f}"} if loss is not None else {}))

        yield on_step
