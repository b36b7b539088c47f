"""Helpers shared by tests (importable: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

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
