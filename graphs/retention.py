"""Checkpoint retention: `promptloop db prune` deletes the checkpoints of finished graph runs.

Every finished run is recorded in the store (store/threads.py) before anything may prune it, so a re-run still
skips finished collection chunks and finished loops. Trace events, rows and versions stay: only the
checkpointer's copy of each step's state goes, which is what grows without bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from promptloop.config import Settings
from promptloop.errors import PromptloopError
from promptloop.store.threads import mark_pruned, prunable

_UNITS = {"d": "days", "h": "hours", "m": "minutes", "w": "weeks"}


class BadAge(PromptloopError, ValueError):
    """An --older-than that is not a number with a unit."""


def parse_age(text: str) -> timedelta:
    """'7d', '12h', '30m', '2w', or a plain number of days."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhmw]?)\s*", text or "")
    if not m:
        raise BadAge(f"--older-than takes a number with a unit (7d, 12h, 30m, 2w), got '{text}'")
    return timedelta(**{_UNITS[m.group(2) or "d"]: float(m.group(1))})


@dataclass
class PruneReport:
    threads: int = 0
    by_graph: dict[str, int] = field(default_factory=dict)
    bytes_before: int | None = None
    bytes_after: int | None = None
    dry_run: bool = False


def checkpoint_bytes(settings: Settings, checkpointer: Any) -> int | None:
    """The checkpoint store's size: the SQLite file (with its WAL), or the Postgres tables."""
    url = settings.database_url or ""
    if url.startswith(("postgresql", "postgres")):
        with checkpointer.conn.connection() as conn:
            row = conn.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                               "WHERE c.relname IN ('checkpoints', 'checkpoint_blobs', 'checkpoint_writes')"
                               ).fetchone()
        return int(row[0])
    paths = [settings.checkpoints_path, settings.checkpoints_path.with_name(settings.checkpoints_path.name + "-wal")]
    return sum(p.stat().st_size for p in paths if p.exists())


def prune(engine: Engine, checkpointer: Any, settings: Settings, *, keep: int = 0,
          older_than: timedelta | None = None, dry_run: bool = False) -> PruneReport:
    """Delete the checkpoints of finished threads (all but the ``keep`` newest, and only those older than
    ``older_than``); SQLite's file is vacuumed so the space returns to the disk."""
    rows = prunable(engine, keep=keep, older_than=older_than)
    report = PruneReport(threads=len(rows), dry_run=dry_run, bytes_before=checkpoint_bytes(settings, checkpointer))
    for r in rows:
        report.by_graph[r.graph] = report.by_graph.get(r.graph, 0) + 1
    if dry_run or not rows:
        report.bytes_after = report.bytes_before
        return report
    done: list[str] = []
    try:
        for r in rows:
            checkpointer.delete_thread(r.thread_id)
            done.append(r.thread_id)
    finally:
        mark_pruned(engine, done)  # what was deleted is recorded even when a later delete fails
    if not (settings.database_url or "").startswith(("postgresql", "postgres")):
        conn = checkpointer.conn
        conn.commit()
        conn.execute("VACUUM")  # in WAL mode the rebuilt file goes through the WAL: checkpoint it back
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    report.bytes_after = checkpoint_bytes(settings, checkpointer)
    return report
