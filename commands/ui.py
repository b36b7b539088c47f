"""`promptloop ui`: the trace viewer on loopback."""

from __future__ import annotations

from typing import Annotated

import typer

from promptloop.commands.shared import TOKEN_HELP, serve_web_app


def ui_cmd(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind; loopback by default (traces hold user prompts)")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8501,
    token: Annotated[str | None, typer.Option(help=TOKEN_HELP)] = None,
) -> None:
    """Inspect what the agents did: runs and their node timelines, candidates with critiques and rewards,
    preference pairs, videos, per-round metrics and model version lineage (read-only)."""
    serve_web_app(ctx, "app", f"promptloop traces on [bold]http://{host}:{port}[/] (read-only; Ctrl+C stops)",
                  host=host, port=port, token=token)
