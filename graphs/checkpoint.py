"""The LangGraph checkpointer that matches the store: SQLite beside the database, or Postgres by URL.

On Postgres the saver takes connections from a ``psycopg_pool.ConnectionPool``: a collection fans out parts
that checkpoint at the same time (``collect.max_concurrency``), and one shared connection made them queue behind
each other (and a broken connection broke every part). The store's engine keeps SQLAlchemy's own pool, which the
ORM needs; both are sized by ``postgres.pool_size``.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from promptloop.config import Settings

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver


def make_checkpointer(settings: Settings) -> BaseCheckpointSaver:
    url = settings.database_url or ""
    if url.startswith(("postgresql", "postgres")):
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg_pool import ConnectionPool

        from promptloop.store.engine import conninfo

        pool = ConnectionPool(conninfo(url), min_size=1, max_size=settings.postgres.pool_size, open=True,
                              kwargs={"autocommit": True, "prepare_threshold": 0},
                              name="promptloop-checkpoints")
        # setup() is not safe to run concurrently: workers starting together take turns. The turn is polled
        # (pg_try_advisory_lock), never waited for in a statement: setup's CREATE INDEX CONCURRENTLY waits for
        # every running transaction, and a worker blocked in pg_advisory_lock is one, holding the turn's owner
        # back while it waits for the owner (a deadlock PostgreSQL reports on one of them).
        with pool.connection() as conn:
            while not conn.execute("SELECT pg_try_advisory_lock(hashtext('promptloop-checkpointer-setup'))"
                                   ).fetchone()[0]:
                time.sleep(0.2)
            try:
                PostgresSaver(conn).setup()
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext('promptloop-checkpointer-setup'))")
        return PostgresSaver(pool)
    from langgraph.checkpoint.sqlite import SqliteSaver

    settings.home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(settings.checkpoints_path), check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    saver = SqliteSaver(conn)
    saver.setup()
    return saver
