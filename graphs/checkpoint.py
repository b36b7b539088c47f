"""The LangGraph checkpointer that matches the store: SQLite beside the database, or Postgres by URL."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from promptloop.config import Settings

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver


def make_checkpointer(settings: Settings) -> BaseCheckpointSaver:
    url = settings.database_url or ""
    if url.startswith(("postgresql", "postgres")):
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg import Connection

        conninfo = url.replace("postgresql+psycopg://", "postgresql://").replace("postgresql+psycopg2://",
                                                                                  "postgresql://")
        conn = Connection.connect(conninfo, autocommit=True, prepare_threshold=0)
        saver = PostgresSaver(conn)
        # setup() is not safe to run concurrently: workers starting together take turns.
        conn.execute("SELECT pg_advisory_lock(hashtext('promptloop-checkpointer-setup'))")
        try:
            saver.setup()
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('promptloop-checkpointer-setup'))")
        return saver
    from langgraph.checkpoint.sqlite import SqliteSaver

    settings.home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(settings.checkpoints_path), check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    saver = SqliteSaver(conn)
    saver.setup()
    return saver
