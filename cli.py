"""The `promptloop` command.

Global flags (--home, --database-url, --config, ...) override promptloop.toml
and PROMPTLOOP_* variables; every sub-command gets the resulting Settings
through one Runtime. Errors a user can fix print one red line and exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from promptloop.config import load_settings
from promptloop.errors import PromptloopError
from promptloop.runtime import Runtime

app = typer.Typer(help="promptloop: a self-improving prompt rewriter for text-to-video models.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
models_app = typer.Typer(help="Prepare and list models in the local cache.", no_args_is_help=True)
prompts_app = typer.Typer(help="User prompts: import, list, statistics.", no_args_is_help=True)
data_app = typer.Typer(help="Training data export (TRL formats).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(prompts_app, name="prompts")
app.add_typer(data_app, name="data")

console = Console(stderr=True)
out = Console()


class UserError(PromptloopError):
    """Bad input or a missing prerequisite: reported in one line, exit code 2."""


def _rt(ctx: typer.Context) -> Runtime:
    return ctx.obj


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


@app.callback()
def main_callback(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option(help="Folder for database, models, adapters, videos, reports "
                                                   "(env PROMPTLOOP_HOME; default ~/.promptloop)")] = None,
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (env PROMPTLOOP_DATABASE_URL; "
                                                          "default sqlite file in home)")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML settings file (env PROMPTLOOP_CONFIG; "
                                                     "default ./promptloop.toml)")] = None,
    base_model: Annotated[str | None, typer.Option(help="Rewriter base: embedded name, hub id, folder or .gguf")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | mps")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed")] = None,
) -> None:
    try:
        settings = load_settings(home=home, database_url=database_url, config_file=config, base_model=base_model,
                                 device=device, seed=seed)
    except (ValidationError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] invalid settings: {exc}")
        raise typer.Exit(2) from None
    ctx.obj = Runtime(settings)


# --- init / db ----------------------------------------------------------------------
@app.command()
def init(
    ctx: typer.Context,
    models: Annotated[bool, typer.Option("--models/--no-models", help="Also prepare the embedded models")] = True,
    data: Annotated[bool, typer.Option("--data/--no-data", help="Also import the shipped prompt sets")] = True,
) -> None:
    """Create the home folder, upgrade the database and load the shipped data and models."""
    from promptloop.store.shipped import import_shipped

    rt = _rt(ctx)
    rt.settings.ensure_home()
    rev = rt.upgrade_db()
    console.print(f"home [bold]{rt.settings.home}[/]  database at revision [bold]{rev}[/]")
    if data:
        for rep in import_shipped(rt.engine, max_chars=rt.settings.max_prompt_chars):
            console.print(f"  {rep.path}: {rep.created} new, {rep.existing} already stored")
    if models:
        _prepare(rt, rt.settings.base_model, force=False)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Create or upgrade the schema to REVISION (default: head)."""
    from promptloop.store.migrate import upgrade

    rt = _rt(ctx)
    rev = upgrade(rt.engine, revision)
    console.print(f"database {rt.settings.database_url} at revision [bold]{rev}[/]")


# --- models -------------------------------------------------------------------------
def _prepare(rt: Runtime, reference: str, force: bool) -> None:
    from promptloop.agents.llm.prepare import prepare_model

    prepared = prepare_model(reference, rt.settings.models_dir, force=force)
    state = "prepared" if prepared.created else "already prepared"
    console.print(f"{reference}: {state} at {prepared.path} ({prepared.seconds:.1f} s)")


@models_app.command("prepare")
def models_prepare(
    ctx: typer.Context,
    reference: Annotated[str | None, typer.Argument(help="Embedded name, hub id, local folder or .gguf file "
                                                         "(default: settings.base_model)")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if cached")] = False,
) -> None:
    """Cache a model as a plain safetensors folder (idempotent)."""
    rt = _rt(ctx)
    _prepare(rt, reference or rt.settings.base_model, force)


@models_app.command("list")
def models_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Embedded models, prepared models and rewriter versions."""
    from sqlmodel import Session, select

    from promptloop.agents.embedder import EMBEDDED_EMBEDDERS
    from promptloop.agents.llm.prepare import EMBEDDED_LLMS, list_prepared
    from promptloop.store.models import ModelVersion

    rt = _rt(ctx)
    prepared = {p["reference"]: p for p in list_prepared(rt.settings.models_dir)}
    rows = [{"name": e.name, "kind": "llm (embedded)", "package": e.package,
             "prepared": e.name in prepared, "path": prepared.get(e.name, {}).get("path")}
            for e in EMBEDDED_LLMS.values()]
    rows += [{"name": n, "kind": "embedder (embedded)", "package": pkg, "prepared": True, "path": None}
             for n, (pkg, _) in EMBEDDED_EMBEDDERS.items()]
    rows += [{"name": r, "kind": "llm", "package": None, "prepared": True, "path": p["path"]}
             for r, p in prepared.items() if r not in EMBEDDED_LLMS]
    rt.upgrade_db()
    with Session(rt.engine) as s:
        rows += [{"name": v.name, "kind": f"rewriter version ({v.algorithm}, {v.status})", "package": None,
                  "prepared": True, "path": v.adapter_path} for v in s.exec(select(ModelVersion))]
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "kind", "prepared", "path / package")
    for r in rows:
        table.add_row(r["name"], r["kind"], "yes" if r["prepared"] else "no", r["path"] or r["package"] or "")
    out.print(table)


# --- prompts ------------------------------------------------------------------------
@prompts_app.command("import")
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

    rt = _rt(ctx)
    rt.upgrade_db()
    rep = import_prompts(rt.engine, file, split=split, source=source, category=category,
                         max_chars=rt.settings.max_prompt_chars)
    console.print(f"{rep.rows} rows: [green]{rep.created} new[/], {rep.existing} already stored "
                  f"({', '.join(f'{k}={v}' for k, v in rep.by_split.items())})")


@prompts_app.command("list")
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

    rt = _rt(ctx)
    rt.upgrade_db()
    q = select(Prompt).order_by(Prompt.id).limit(limit)
    for col, val in (("split", split), ("source", source), ("category", category)):
        if val is not None:
            q = q.where(getattr(Prompt, col) == val)
    with Session(rt.engine) as s:
        rows = [p.model_dump(exclude={"content_hash"}) for p in s.exec(q)]
    if as_json:
        _print_json(rows)
        return
    table = Table("id", "split", "source", "category", "text")
    for r in rows:
        table.add_row(str(r["id"]), r["split"], r["source"], r["category"] or "", r["text"])
    out.print(table)


@prompts_app.command("stats")
def prompts_stats(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Counts by split, source and category."""
    from sqlalchemy import func
    from sqlmodel import Session, select

    from promptloop.store.models import Prompt

    rt = _rt(ctx)
    rt.upgrade_db()
    with Session(rt.engine) as s:
        rows = s.exec(select(Prompt.split, Prompt.source, Prompt.category, func.count())
                      .group_by(Prompt.split, Prompt.source, Prompt.category)
                      .order_by(Prompt.split, Prompt.source, Prompt.category)).all()
    stats = [{"split": a, "source": b, "category": c, "count": n} for a, b, c, n in rows]
    if as_json:
        _print_json({"total": sum(r["count"] for r in stats), "groups": stats})
        return
    table = Table("split", "source", "category", "count")
    for r in stats:
        table.add_row(r["split"], r["source"], r["category"] or "", str(r["count"]))
    table.add_row("[bold]total", "", "", f"[bold]{sum(r['count'] for r in stats)}")
    out.print(table)


# --- data ---------------------------------------------------------------------------
@data_app.command("export")
def data_export(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="sft | dpo")],
    out_path: Annotated[Path, typer.Argument(metavar="OUT", help="jsonl file or hf dataset folder")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl | hf (datasets save_to_disk)")] = "jsonl",
    round_id: Annotated[int | None, typer.Option("--round", help="Only this round's data")] = None,
) -> None:
    """Export SFT examples (messages) or preference pairs (prompt/chosen/rejected) for TRL."""
    from promptloop.store.exporter import export

    if kind not in ("sft", "dpo"):
        raise UserError(f"unknown export kind '{kind}'; expected sft or dpo")
    if fmt not in ("jsonl", "hf"):
        raise UserError(f"unknown format '{fmt}'; expected jsonl or hf")
    rt = _rt(ctx)
    rt.upgrade_db()
    rewriter = _rewriter_template(rt)
    n = export(rt.engine, kind, out_path, rewriter.messages_for, fmt=fmt, round_id=round_id)  # type: ignore[arg-type]
    console.print(f"wrote {n} {kind} rows to {out_path} ({fmt})")


def _rewriter_template(rt: Runtime):
    """A Rewriter used only for its prompt template (no model is loaded)."""
    from promptloop.agents.rewriter import Rewriter

    r = rt.settings.rewrite
    return Rewriter(model=None, min_words=r.target_words_min, max_words=r.target_words_max)  # type: ignore[arg-type]


# --- rewrite ------------------------------------------------------------------------
@app.command()
def rewrite(
    ctx: typer.Context,
    prompts: Annotated[list[str], typer.Argument(help="One or more user prompts (batched in one call)")],
    n: Annotated[int, typer.Option(min=1, max=64, help="Candidates per prompt")] = 1,
    max_new_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="0 = greedy")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rewrite prompts with the base rewriter (plain version: one model call, no agents)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    rt = _rt(ctx)
    if any(not p.strip() for p in prompts):
        raise UserError("empty prompt")
    too_long = [p for p in prompts if len(p) > rt.settings.max_prompt_chars]
    if too_long:
        raise UserError(f"prompt of {len(too_long[0])} characters is over the limit of {rt.settings.max_prompt_chars}")
    params = rt.sampling(n=n, max_new_tokens=max_new_tokens, temperature=temperature)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        progress.add_task("loading the rewriter", total=None)
        rewriter = rt.rewriter()
        progress.add_task(f"rewriting {len(prompts)} prompt(s) x {n}", total=None)
        results = rewriter.rewrite(prompts, params)
    if as_json:
        _print_json([{"prompt": r.prompt, "final_prompt": r.candidates[0], "candidates": r.candidates,
                      "model": rt.settings.base_model} for r in results])
        return
    for r in results:
        out.print(f"[bold cyan]{r.prompt}[/]")
        for i, c in enumerate(r.candidates, 1):
            out.print(f"  [dim]{i}.[/] {c}")


def main() -> None:
    try:
        app(standalone_mode=True)
    except (PromptloopError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(2)



if __name__ == "__main__":  # pragma: no cover
    main()
