"""`promptloop teacher import|list`: recorded teachers, the strong rewrites a student is distilled from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from promptloop.commands.shared import UserError, console, print_json, services_of

app = typer.Typer(help="Teachers: recorded (prompt, rewrite) sets to distil into the rewriter (VPO stage 1).",
                  no_args_is_help=True)


@app.command("import")
def teacher_import(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help=".jsonl or .csv with 'prompt' and 'rewrite' columns, or a "
                                                     "datasets save_to_disk folder")] = None,
    name: Annotated[str | None, typer.Option(help="Teacher name: SFT rows get source teacher:NAME (default: the "
                                                  "shipped set's name)")] = None,
    shipped: Annotated[str | None, typer.Option(help="Import a shipped public rewrite of VBench instead of a file, "
                                                     "vbench-train prompts only: gpt4o | wan21_qwen25_3b | hunyuan")
                       ] = None,
) -> None:
    """Validate a whole recorded set, then store its rewrites as teacher candidates; a bad file stores nothing.

    Rows whose prompt the store holds out (eval, test, red team) are refused: a teacher never trains on an
    evaluated prompt."""
    from promptloop.store.teachers import import_teacher, read_teacher_file, shipped_teacher_rows

    if (file is None) == (shipped is None):
        raise UserError("give a FILE or --shipped NAME (one of them)")
    if file is not None and not name:
        raise UserError("--name is required with a FILE (it names the teacher: source teacher:NAME)")
    rt = services_of(ctx)
    if shipped is not None:
        rows, source = shipped_teacher_rows(shipped), f"shipped:vbench/{shipped}"
    else:
        rows = read_teacher_file(file, max_prompt_chars=rt.settings.max_prompt_chars,
                                 max_rewrite_chars=rt.settings.teacher.max_rewrite_chars)
        source = str(file)
    rep = import_teacher(rt.engine, rows, name=name or shipped, source=source)
    console.print(f"teacher {rep.name}: {rep.rows} rows, [green]{rep.created} new[/] rewrites, {rep.existing} "
                  f"already stored, {rep.new_prompts} new prompts (split train)")


@app.command("list")
def teacher_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Teachers with rewrites in the store: recorded sets and served teachers' samples."""
    from dataclasses import asdict

    from promptloop.store.teachers import teacher_sets

    sets = teacher_sets(services_of(ctx).engine)
    if as_json:
        print_json([asdict(t) | {"recorded": t.recorded} for t in sets])
        return
    table = Table("teacher", "kind", "rewrites", "prompts", "from")
    for t in sets:
        table.add_row(t.name, "recorded" if t.recorded else "served", str(t.rewrites), str(t.prompts),
                      ", ".join(t.sources) or "-")
    console.print(table if sets else "no teachers yet: `promptloop teacher import FILE --name NAME` or "
                  "`promptloop teacher import --shipped gpt4o`")
