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
