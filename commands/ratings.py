"""`promptloop ratings import|export|serve`: people's ratings of videos (LiFT)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptloop.commands.shared import TOKEN_HELP, UserError, console, serve_web_app, services_of

app = typer.Typer(help="Human ratings of videos: import, export, and a rating page for people.",
                  no_args_is_help=True)


@app.command("import")
def ratings_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help=".jsonl or .csv with video_id (or candidate_id), rater, dimension, "
                                              "score, rationale")],
) -> None:
    """Import ratings; the whole file is validated first and nothing is stored unless every row is valid."""
    from promptloop.store.ratings import import_ratings

    rt = services_of(ctx)
    counts = import_ratings(rt.engine, file, rt.settings.ratings)
    console.print(f"imported {counts['new']} new rating(s), updated {counts['updated']} from {file}")


@app.command("export")
def ratings_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Output .jsonl or .csv")],
) -> None:
    """Every rating with its video path, the rewrite that was rendered and the user's prompt."""
    from promptloop.store.ratings import export_ratings

    rt = services_of(ctx)
    n = export_ratings(rt.engine, out)
    console.print(f"wrote {n} rating(s) to {out}")


@app.command("serve")
def ratings_serve(
    ctx: typer.Context,
    rater: Annotated[str, typer.Option(help="Who is rating (stored with every score)")],
    host: Annotated[str, typer.Option(help="Address to bind; loopback by default")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8502,
    token: Annotated[str | None, typer.Option(help=TOKEN_HELP)] = None,
) -> None:
    """A local rating page: one video at a time with its prompt, a score and a rationale per dimension,
    keyboard-friendly (1-5 picks a score, Tab moves, Enter saves), with progress (rated / remaining)."""
    if not rater.strip():
        raise UserError("--rater must name who is rating")
    serve_web_app(ctx, "rating", f"rating page for [bold]{rater}[/] on http://{host}:{port} (Ctrl+C stops)",
                  rater=rater.strip(), host=host, port=port, token=token)
