"""Sharing one job between workers: enqueue prompts once, claim them without overlap, mark them done.

On PostgreSQL a claim is one statement, ``UPDATE ... WHERE id IN (SELECT ...
FOR UPDATE SKIP LOCKED) RETURNING``: concurrent workers skip each other's
locked rows instead of waiting or double-claiming. SQLite has no row locks
(the clause is left out) but runs every write statement under its database
lock, which gives the same exclusivity for workers on one machine.

A worker that restarts gets its own unfinished claims back first (same
prompts, same chunk, so the collection resumes its checkpoint); claims older
than ``lease_s`` are taken over by anyone, so a dead worker loses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from promptloop.store.models import WorkItem

T = WorkItem.__table__


def enqueue(engine: Engine, job: str, prompt_ids: Sequence[int], *, adapter: str | None = None) -> int:
    """Add the job's prompts (idempotent: every worker may call it with the same list); returns rows added.

    ``adapter`` names the rewriter version the job samples with (None: the base model)."""
    if not prompt_ids:
        return 0
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(T).values([{"job": job, "prompt_id": p, "status": "pending", "attempts": 0, "adapter": adapter}
                             for p in prompt_ids])
    stmt = stmt.on_conflict_do_nothing(index_elements=["job", "prompt_id"]).returning(T.c.id)
    with engine.begin() as conn:
        return len(conn.execute(stmt).all())


def claim(engine: Engine, job: str, worker: str, limit: int, *, lease_s: float = 1800.0) -> list[int]:
    """Up to ``limit`` prompt ids of ``job`` for ``worker``: its own open claims first, then pending or stale ones."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        own = conn.execute(select(T.c.prompt_id).where(T.c.job == job, T.c.worker == worker,
                                                       T.c.status == "claimed").order_by(T.c.id).limit(limit)
                           ).scalars().all()
        if own:
            return list(own)
        stale = now - timedelta(seconds=lease_s)
        pick = (select(T.c.id).where(T.c.job == job, or_(T.c.status == "pending",
                                                         and_(T.c.status == "claimed", T.c.claimed_at < stale)))
                .order_by(T.c.id).limit(limit).with_for_update(skip_locked=True))
        stmt = (update(T).where(T.c.id.in_(pick.scalar_subquery()))
                .values(status="claimed", worker=worker, claimed_at=now, attempts=T.c.attempts + 1)
                .returning(T.c.prompt_id))
        return sorted(conn.execute(stmt).scalars().all())


def complete(engine: Engine, job: str, worker: str, prompt_ids: Sequence[int]) -> int:
    """Mark the worker's claims done; a claim another worker took over meanwhile is left to it."""
    if not prompt_ids:
        return 0
    with engine.begin() as conn:
        return conn.execute(update(T).where(T.c.job == job, T.c.worker == worker, T.c.status == "claimed",
                                            T.c.prompt_id.in_(list(prompt_ids)))
                            .values(status="done", done_at=datetime.now(UTC))).rowcount or 0


def progress(engine: Engine, job: str) -> dict[str, int]:
    """Items per status, e.g. {'pending': 3, 'claimed': 2, 'done': 45}."""
    with engine.connect() as conn:
        rows = conn.execute(select(T.c.status, func.count()).where(T.c.job == job).group_by(T.c.status)).all()
    return {s: n for s, n in rows}


def done_by_worker(engine: Engine, job: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(T.c.worker, func.count()).where(T.c.job == job, T.c.status == "done")
                            .group_by(T.c.worker)).all()
    return {w: n for w, n in rows}


def adapters_in_use(engine: Engine) -> set[str]:
    """Rewriter versions that unfinished shared jobs sample with: what no worker may unload from a served vLLM."""
    with engine.connect() as conn:
        rows = conn.execute(select(T.c.adapter).where(T.c.status != "done", T.c.adapter.is_not(None)).distinct())
        return {r[0] for r in rows}
