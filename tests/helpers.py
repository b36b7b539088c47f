"""Helpers shared by tests (importable: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os

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
    """A prerequisite (a server, a browser, a client) is missing: skip on a developer's machine, fail in CI,
    whose .ci/run installs every one of them, so a CI run can never pass by skipping."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI=true: .ci/run installs it, so this is a broken CI setup)")
    pytest.skip(reason)
