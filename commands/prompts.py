"""`promptloop prompts import|list|stats`: the user prompts in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from promptloop.commands.shared import console, out, print_json, services_of

app = typer.Typer(help="User prompts: import, list, statistics.", no_args_is_help=True)


@app.command("import")
def prompts_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help=".txt (one per line), .jsonl, .csv (prompt/text column) "
                                              "or a datasets save_to_disk folder")],
    split: Annotated[str | None, typer.Option(help="train | eval | test | redteam (default: file's own, else train)")] = None,
    source: Annotated[str | None, typer.Option(help="Source name (default: file name)")] = None,
    category: Annotated[str | None, typer.Option(help="Category for rows that have none")] = None,
) -> None:
    """Validate a whole file, then store its prompts; a bad file stores nothing."""
    from promptloop.store.importer import import_prompts

    rt = services_of(ctx)
    rep = import_prompts(rt.engine, file, split=split, source=source, category=category,
                         max_chars=rt.settings.max_prompt_chars)
    console.print(f"{rep.rows} rows: [green]{rep.created} new[/], {rep.existing} already stored "
                  f"({', '.join(f'{k}={v}' for k, v in rep.by_split.items())})")


@app.command("list")
def prompts_list(
    ctx: typer.Context,
    split: Annotated[str | None, typer.Option()] = None,
    source: Annotated[str | None, typer.Option()] = None,
    category: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List stored prompts."""
    from sqlmodel import Session, select

    from promptloop.store.models import Prompt

    rt = services_of(ctx)
    q = select(Prompt).order_by(Prompt.id).limit(limit)
    for col, val in (("split", split), ("source", source), ("category", category)):
        if val is not None:
            q = q.where(getattr(Prompt, col) == val)
    with Session(rt.engine) as s:
        rows = [p.model_dump(exclude={"content_hash"}) for p in s.exec(q)]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "split", "source", "category", "text")
    for r in rows:
        table.add_row(str(r["id"]), r["split"], r["source"], r["category"] or "", r["text"])
    out.print(table)


@app.command("stats")
def prompts_stats(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Counts by split, source and category."""
    from sqlalchemy import func
    from sqlmodel import Session, select

    from promptloop.store.models import Prompt

    rt = services_of(ctx)
    with Session(rt.engine) as s:
        rows = s.exec(select(Prompt.split, Prompt.source, Prompt.category, func.count())
                      .group_by(Prompt.split, Prompt.source, Prompt.category)
                      .order_by(Prompt.split, Prompt.source, Prompt.category)).all()
    stats = [{"split": a, "source": b, "category": c, "count": n} for a, b, c, n in rows]
    if as_json:
        print_json({"total": sum(r["count"] for r in stats), "groups": stats})
        return
    table = Table("split", "source", "category", "count")
    for r in stats:
        table.add_row(r["split"], r["source"], r["category"] or "", str(r["count"]))
    table.add_row("[bold]total", "", "", f"[bold]{sum(r['count'] for r in stats)}")
    out.print(table)


