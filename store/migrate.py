"""Schema creation and upgrades through Alembic, driven from Python (no alembic.ini to find)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the database to ``revision``; returns the revision it is at afterwards."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Workers starting together on one database migrate one at a time (released at commit).
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('promptloop-migrate'))"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def open_store(url: str, *, create: bool = True, pool_size: int = 8, max_overflow: int = 8) -> Engine:
    """An engine on ``url`` with the schema at head: migrations run once, when the store is opened.

    With ``create=False`` a database that does not exist yet (no SQLite file,
    or no promptloop schema) is an error instead of a new empty store, so a
    mistyped URL is caught before anything reads from or writes to it.
    """
    from promptloop.errors import PromptloopError, redact
    from promptloop.store.engine import make_engine, sqlite_path

    missing = f"no promptloop database at {redact(url)}; `promptloop init` creates one (or check --database-url)"
    path = sqlite_path(url)
    if not create and path is not None and not path.is_file():
        raise PromptloopError(missing)
    engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
    if not create and current_revision(engine) is None:
        raise PromptloopError(missing)
    upgrade(engine)
    return engine
