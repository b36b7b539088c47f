"""Helpers shared by tests (importable: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from promptloop.store.models import ALL_TABLES


def table_counts(engine) -> dict[str, int]:
    with Session(engine) as s:
        return {t.__tablename__: s.exec(select(func.count()).select_from(t)).one() for t in ALL_TABLES}


def table_snapshot(engine) -> dict[str, list]:
    """Every row of every table, for asserting that a failed step changed nothing."""
    with Session(engine) as s:
        return {t.__tablename__: sorted(repr(r.model_dump()) for r in s.exec(select(t))) for t in ALL_TABLES}


def unavailable(reason: str) -> None:
    """A prerequisite (PostgreSQL, Chromium, a Compose client) is missing: the test fails and says what to install.

    Never a skip: a run that passes must have exercised every test (.ci/run installs them all with apt-get).
    """
    pytest.fail(f"{reason}; install it (apt-get install postgresql chromium docker-compose, as .ci/run does)")


def run_cli(home: Path, *args: str, check: bool = True, env: dict | None = None, cwd: Path | None = None
            ) -> subprocess.CompletedProcess:
    """The real `promptloop` command in a subprocess on ``home``, no developer PROMPTLOOP_* variables leaking in."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTLOOP_")}
    full.update(PROMPTLOOP_HOME=str(home), HF_HUB_OFFLINE="1", COLUMNS="200")
    full.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "promptloop.cli", *args], capture_output=True, text=True, env=full,
                          cwd=cwd or home.parent, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def invoke_cli(*args: str) -> tuple[int, str, str]:
    """`promptloop ARGS` in this process through the same ``main`` (exit code, stdout, stderr): fast, no subprocess."""
    import contextlib
    import io

    from promptloop.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            return (exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)), out.getvalue(), \
                err.getvalue()
    return 0, out.getvalue(), err.getvalue()


RATED_PROMPTS = ["a red fox in snow", "waves at dusk", "a lantern in fog", "a tram climbing a hill"]


def rate_tiny_videos(rt, prompts: list[str] = RATED_PROMPTS, scores: tuple[int, ...] = (5, 1, 4, 2)) -> None:
    """Render each prompt with the configured (tiny) video model and rate it as ana would: the store a
    reward-weighted video run trains on (videos of candidates, one video_fidelity rating each)."""
    from promptloop.agents.renderer import RenderRequest
    from promptloop.store import repository as repo
    from promptloop.store.engine import session_scope
    from promptloop.store.models import HumanRating, Video

    videos = rt.render_cache.render_many([RenderRequest(prompt=p, seed=i) for i, p in enumerate(prompts)])
    with session_scope(rt.engine) as s:
        prompt, _ = repo.add_prompt(s, "anything")
        for v, text, score in zip(videos, prompts, scores, strict=True):
            c, _ = repo.add_candidate(s, prompt.id, text)
            row = s.get(Video, v.video_id)
            row.candidate_id = c.id
            s.add(row)
            s.add(HumanRating(video_id=v.video_id, rater="ana", dimension="video_fidelity", score=score,
                              rationale="synthetic"))
