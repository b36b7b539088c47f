"""`promptloop init`, `db upgrade`, `models prepare|list`: the home folder, the schema, the model cache."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from promptloop.commands.shared import console, out, print_json, services_of
from promptloop.services import Services

db_app = typer.Typer(help="Database schema (Alembic migrations) and checkpoint retention.", no_args_is_help=True)
models_app = typer.Typer(help="Prepare and list models in the local cache.", no_args_is_help=True)


def init(
    ctx: typer.Context,
    models: Annotated[bool, typer.Option("--models/--no-models", help="Also prepare the embedded models")] = True,
    data: Annotated[bool, typer.Option("--data/--no-data", help="Also import the shipped prompt sets")] = True,
) -> None:
    """Create the home folder, upgrade the database and load the shipped data and models."""
    from promptloop.store.migrate import current_revision
    from promptloop.store.shipped import import_shipped

    rt = services_of(ctx)
    rev = current_revision(rt.engine)  # opening the store (rt.engine) created or upgraded the schema
    console.print(f"home [bold]{rt.settings.home}[/]  database at revision [bold]{rev}[/]")
    if data:
        for rep in import_shipped(rt.engine, max_chars=rt.settings.max_prompt_chars):
            console.print(f"  {rep.path}: {rep.created} new, {rep.existing} already stored")
    if models:
        prepare(rt, rt.settings.base_model, force=False)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Create or upgrade the schema to REVISION (default: head)."""
    from promptloop.errors import redact
    from promptloop.store.engine import make_engine
    from promptloop.store.migrate import upgrade

    rt = services_of(ctx)
    rt.settings.ensure_home()
    rev = upgrade(make_engine(rt.settings.database_url), revision)  # not rt.engine: that one opens at head
    console.print(f"database {redact(rt.settings.database_url)} at revision [bold]{rev}[/]")


@db_app.command("prune")
def db_prune(
    ctx: typer.Context,
    keep_threads: Annotated[int, typer.Option(min=0, help="Keep the checkpoints of this many most recently "
                                              "finished runs (to replay or inspect them)")] = 100,
    older_than: Annotated[str | None, typer.Option(help="Only runs finished longer ago than this: 7d, 12h, 30m, "
                                                   "2w (default: any age)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Delete the LangGraph checkpoints of finished runs (collection chunks, rewrites, loops) and vacuum SQLite.

    Finished runs are recorded in the store first, so a pruned collection or loop is still skipped when run
    again; trace events, data and versions are untouched. Runs that did not finish keep their checkpoints."""
    from promptloop.graphs.retention import parse_age, prune

    rt = services_of(ctx)
    age = parse_age(older_than) if older_than is not None else None
    rep = prune(rt.engine, rt.checkpointer, rt.settings, keep=keep_threads, older_than=age, dry_run=dry_run)
    if as_json:
        print_json(rep.__dict__)
        return
    def mb(b: int | None) -> str:
        return "?" if b is None else f"{b / 1e6:.2f} MB"

    what = ", ".join(f"{n} {g}" for g, n in sorted(rep.by_graph.items())) or "none"
    console.print(f"{'would prune' if dry_run else 'pruned'} {rep.threads} finished run(s) ({what}); checkpoint "
                  f"store {mb(rep.bytes_before)} -> {mb(rep.bytes_after)}", highlight=False)


def prepare(rt: Services, reference: str, force: bool) -> None:
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
    rt = services_of(ctx)
    prepare(rt, reference or rt.settings.base_model, force)


@models_app.command("list")
def models_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Embedded models, prepared models and rewriter versions."""
    from sqlmodel import Session, select

    from promptloop.agents.embedder import EMBEDDED_EMBEDDERS
    from promptloop.agents.llm.prepare import EMBEDDED_LLMS, list_prepared
    from promptloop.store.models import ModelVersion

    rt = services_of(ctx)
    prepared = {p["reference"]: p for p in list_prepared(rt.settings.models_dir)}
    rows = [{"name": e.name, "kind": "llm (embedded)", "package": e.package,
             "prepared": e.name in prepared, "path": prepared.get(e.name, {}).get("path")}
            for e in EMBEDDED_LLMS.values()]
    rows += [{"name": n, "kind": "embedder (embedded)", "package": pkg, "prepared": True, "path": None}
             for n, (pkg, _) in EMBEDDED_EMBEDDERS.items()]
    rows += [{"name": r, "kind": "llm", "package": None, "prepared": True, "path": p["path"]}
             for r, p in prepared.items() if r not in EMBEDDED_LLMS]
    with Session(rt.engine) as s:
        rows += [{"name": v.name, "kind": f"rewriter version ({v.algorithm}, {v.status})", "package": None,
                  "prepared": True, "path": v.adapter_path} for v in s.exec(select(ModelVersion))]
    if as_json:
        print_json(rows)
        return
    table = Table("name", "kind", "prepared", "path / package")
    for r in rows:
        table.add_row(r["name"], r["kind"], "yes" if r["prepared"] else "no", r["path"] or r["package"] or "")
    out.print(table)


@models_app.command("capabilities")
def models_capabilities(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What each chat model was measured able to do: e.g. whether the critic's model writes valid JSON critiques
    (measured once, on first use, and remembered; the LLM critique stays off for a model that cannot)."""
    from promptloop.store.capabilities import list_capabilities

    rows = [{"model": c.model, "capability": c.capability, "capable": c.capable, "valid": c.valid,
             "asked": c.asked, "measured_at": c.updated_at.isoformat()} for c in list_capabilities(services_of(ctx).engine)]
    if as_json:
        print_json(rows)
        return
    table = Table("model", "capability", "verdict", "valid answers", "measured at",
                  caption="`promptloop models recheck` forgets a verdict so the next run measures again")
    for c in rows:
        table.add_row(c["model"], c["capability"], "capable" if c["capable"] else "[yellow]off[/]",
                      f"{c['valid']}/{c['asked']}", c["measured_at"][:19])
    out.print(table if rows else "no capabilities measured yet")


@models_app.command("recheck")
def models_recheck(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="A model as `models capabilities` names it "
                                                     "(default: all)")] = None,
) -> None:
    """Forget the measured capabilities (e.g. whether the critic's model writes valid JSON critiques), so the next
    run measures them again: after changing a served model behind the same name, say."""
    from promptloop.errors import PromptloopError
    from promptloop.store.capabilities import forget_capabilities, list_capabilities

    rt = services_of(ctx)
    known = {c.model for c in list_capabilities(rt.engine)}
    if model is not None and model not in known:
        raise PromptloopError(f"no measured capabilities for '{model}' (measured: {', '.join(sorted(known)) or 'none'})")
    n = forget_capabilities(rt.engine, model)
    console.print(f"forgot {n} measured capabilit{'y' if n == 1 else 'ies'}; the next run measures again")


