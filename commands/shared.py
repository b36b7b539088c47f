"""What every command module shares: the consoles, the Runtime from the context, JSON output."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console

from promptloop.errors import PromptloopError
from promptloop.runtime import Runtime

console = Console(stderr=True)
# Tables are wide; when stdout is a file or a pipe, do not squeeze them into 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)


class UserError(PromptloopError):
    """Bad input or a missing prerequisite: reported in one line, exit code 2."""


def runtime_of(ctx: typer.Context) -> Runtime:
    return ctx.obj


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def serve_web_app(ctx, module: str, banner: str, **kwargs) -> None:  # noqa: ANN001
    """Start one of promptloop's local web apps (``promptloop.ui.<module>.serve``) on the store of this run."""
    import importlib

    try:
        serve = importlib.import_module(f"promptloop.ui.{module}").serve
    except ImportError as exc:
        raise UserError(f"the web pages need the ui extra: pip install 'promptloop[ui]' ({exc})") from exc
    rt = runtime_of(ctx)
    rt.upgrade_db()
    console.print(banner)
    serve(rt.engine, rt.settings, **kwargs)
