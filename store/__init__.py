"""The store: SQLModel tables, engines, migrations, idempotent writes, import and export."""

from promptloop.store.engine import make_engine, session_scope
from promptloop.store.migrate import upgrade

__all__ = ["make_engine", "session_scope", "upgrade"]
