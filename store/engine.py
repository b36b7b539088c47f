"""Database engines from a URL: SQLite by default (WAL, foreign keys on), PostgreSQL by URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine


def sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def make_engine(url: str, *, echo: bool = False, pool_size: int = 8, max_overflow: int = 8) -> Engine:
    """One engine per process and URL; SQLite gets WAL so readers never block the writer."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    u = make_url(url)
    if u.get_backend_name() == "sqlite":  # in memory: SQLAlchemy's single-connection pool, unsized
        return create_engine(url, echo=echo, pool_pre_ping=True)
    if u.get_backend_name() == "postgresql" and u.get_driver_name() == "psycopg":
        return _on_psycopg_pool(url, echo=echo, size=pool_size + max_overflow)
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)


def _on_psycopg_pool(url: str, *, echo: bool, size: int) -> Engine:
    """The store on a ``psycopg_pool.ConnectionPool``, as the checkpointer, the way psycopg documents it for
    SQLAlchemy: every checkout borrows a pooled connection (``NullPool`` + ``creator``) and SQLAlchemy's close
    hands it back (``close_returns``). A plain connection is tried first, so an unreachable server fails at once
    with the driver's message instead of after the pool's timeout."""
    from psycopg_pool import ConnectionPool
    from sqlalchemy.pool import NullPool

    with create_engine(url, poolclass=NullPool).connect():
        pass
    pool = ConnectionPool(conninfo(url), min_size=1, max_size=size, open=True, close_returns=True,
                          check=ConnectionPool.check_connection, name="promptloop-store")
    engine = create_engine("postgresql+psycopg://", creator=pool.getconn, poolclass=NullPool, echo=echo)
    engine.psycopg_pool = pool  # type: ignore[attr-defined]
    event.listen(engine, "engine_disposed", lambda _engine: pool.close())
    return engine


def conninfo(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL (any driver) as libpq's connection string (the store's and the checkpointer's
    pools)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A transaction: commit on success, roll back everything on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
