"""The errors a user can fix. The CLI prints their message in one line and exits 2."""

from __future__ import annotations

import re


class PromptloopError(Exception):
    """Base for bad input and missing prerequisites (never for bugs)."""


class TransientError(Exception):
    """A model call that may succeed when retried (timeout, dropped connection, out of memory)."""


def is_transient(exc: BaseException) -> bool:
    """Retry predicate for model-calling graph nodes."""
    if isinstance(exc, (TransientError, ConnectionError, TimeoutError)):
        return True
    try:
        import torch

        return isinstance(exc, torch.OutOfMemoryError)
    except (ImportError, AttributeError):  # pragma: no cover
        return False


# user:password@ in any URL, bearer tokens and key=value secrets in query strings or messages
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/\s:@]*):(?P<pw>[^/\s@]+)@")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]+")
_KEY_VALUE = re.compile(r"(?i)\b(api[_-]?key|password|passwd|token|secret)(['\"]?\s*[=:]\s*['\"]?)[^\s&'\",;)]+")


def redact(text: str) -> str:
    """``text`` with credentials masked: URL passwords, bearer tokens, ``api_key=...`` style values.

    Applied to every message the CLI prints and every error stored in traces,
    because a database or backend URL carrying a password ends up in exception
    texts (SQLAlchemy and httpx both repeat the URL they failed on).
    """
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _BEARER.sub(r"\1***", text)
    return _KEY_VALUE.sub(r"\1\2***", text)


def describe(exc: BaseException) -> str | None:
    """One redacted line for an error a user can act on, or None for what is a bug (a traceback is due).

    The families: promptloop's own errors, unreadable or unwritable paths,
    undecodable files, malformed CSV, invalid settings, and databases that are
    unreachable, unknown or malformed in their URL.
    """
    import csv

    if isinstance(exc, PromptloopError):
        msg = str(exc)
    elif isinstance(exc, UnicodeError):
        msg = f"not UTF-8 text: {exc}"
    elif isinstance(exc, csv.Error):
        msg = f"malformed CSV: {exc}"
    elif isinstance(exc, OSError):  # a path under a file, no permission, a full disk: the system's, not a bug
        where = f" {exc.filename}" if exc.filename is not None else ""
        msg = f"cannot use{where}: {exc.strerror or exc}"
    else:
        msg = _describe_library(exc)
        if msg is None:
            return None
    lines = [ln.strip() for ln in msg.strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    # promptloop's own messages list what is wrong (bad rows, each with its line) after a summary: all of it,
    # as one line; a library's first line is its message, the rest is SQL, URLs to its docs or a traceback
    return redact("; ".join(lines) if isinstance(exc, PromptloopError) else lines[0])


def _describe_library(exc: BaseException) -> str | None:
    try:
        from sqlalchemy import exc as sa
    except ImportError:  # pragma: no cover
        sa = None
    if sa is not None:
        if isinstance(exc, sa.NoSuchModuleError):
            return f"unknown database kind in the database URL: {exc}"
        if isinstance(exc, sa.ArgumentError):
            return f"malformed database URL: {exc}"
        if isinstance(exc, sa.OperationalError | sa.InterfaceError):
            orig = getattr(exc, "orig", None) or exc
            return f"database unreachable or unusable: {orig}"
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, ValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"invalid settings: {where + ': ' if where else ''}{first.get('msg', exc)}"
    if isinstance(exc, ModuleNotFoundError) and exc.name in {"psycopg", "psycopg2", "asyncpg", "pymysql"}:
        return f"the database driver {exc.name} is not installed: pip install 'promptloop[postgres]'"
    return None
