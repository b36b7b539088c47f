"""Finished graph runs, recorded in the store: what lets a re-run skip finished work whether or not the thread's
checkpoints still exist, and what `promptloop db prune` may delete."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.store.engine import session_scope
from promptloop.store.models import FinishedThread, utcnow


def record_finished(engine: Engine, thread_id: str, graph: str, result: dict | None = None) -> None:
    """Idempotent: a thread finishes once; recording it again keeps the first record."""
    with session_scope(engine) as s:
        if s.get(FinishedThread, thread_id) is None:
            s.add(FinishedThread(thread_id=thread_id, graph=graph, result=result or {}))


def finished_result(engine: Engine, thread_id: str) -> dict | None:
    """What a finished thread recorded; None when it never finished."""
    with Session(engine) as s:
        row = s.get(FinishedThread, thread_id)
        return dict(row.result) if row is not None else None


def prunable(engine: Engine, *, keep: int = 0, older_than: timedelta | None = None,
             now: datetime | None = None) -> list[FinishedThread]:
    """Finished threads whose checkpoints are still there, minus the ``keep`` most recent and those younger than
    ``older_than``; oldest first."""
    now = now or utcnow()
    with Session(engine) as s:
        rows = list(s.exec(select(FinishedThread).where(FinishedThread.pruned_at.is_(None))
                           .order_by(FinishedThread.finished_at.desc(), FinishedThread.thread_id)).all())
    rows = rows[keep:]
    if older_than is not None:
        rows = [r for r in rows if _aware(r.finished_at) <= now - older_than]
    return list(reversed(rows))


def mark_pruned(engine: Engine, thread_ids: list[str]) -> None:
    with session_scope(engine) as s:
        for tid in thread_ids:
            row = s.get(FinishedThread, tid)
            if row is not None:
                row.pruned_at = utcnow()
                s.add(row)


def _aware(ts: datetime) -> datetime:
    from datetime import UTC

    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
