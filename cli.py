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
from rich.table import Table

from promptloop.commands.evaluate import eval_cmd
from promptloop.commands.loop import app as loop_app
from promptloop.commands.ratings import app as ratings_app
from promptloop.commands.shared import UserError, console, out
from promptloop.commands.train import app as train_app
from promptloop.commands.ui import ui_cmd
from promptloop.commands.video import judge_cmd, render_cmd
from promptloop.config import load_settings
from promptloop.errors import PromptloopError
from promptloop.progress import collection_progress, progress_bar
from promptloop.runtime import Runtime

app = typer.Typer(help="promptloop: a self-improving prompt rewriter for text-to-video models.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
models_app = typer.Typer(help="Prepare and list models in the local cache.", no_args_is_help=True)
prompts_app = typer.Typer(help="User prompts: import, list, statistics.", no_args_is_help=True)
data_app = typer.Typer(help="Training data export (TRL formats).", no_args_is_help=True)
collect_app = typer.Typer(help="Collect training data with the agent graphs (resumable).", no_args_is_help=True)
traces_app = typer.Typer(help="What the agents did: graph runs and their node calls.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(prompts_app, name="prompts")
app.add_typer(data_app, name="data")
app.add_typer(traces_app, name="traces")
app.add_typer(collect_app, name="collect")
app.add_typer(train_app, name="train")
app.add_typer(loop_app, name="loop")
app.add_typer(ratings_app, name="ratings")
app.command("eval")(eval_cmd)
app.command("ui")(ui_cmd)
app.command("render")(render_cmd)
app.command("judge")(judge_cmd)

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
    rewriter = rt.rewriter(with_model=False)
    n = export(rt.engine, kind, out_path, rewriter.messages_for, fmt=fmt, round_id=round_id)  # type: ignore[arg-type]
    console.print(f"wrote {n} {kind} rows to {out_path} ({fmt})")


@data_app.command("stats")
def data_stats_cmd(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Counts per round, the pairs' margin histogram and principle score distributions."""
    from promptloop.store.stats import data_stats

    rt = _rt(ctx)
    rt.upgrade_db()
    stats = data_stats(rt.engine)
    if as_json:
        _print_json(stats)
        return
    cols = ["candidates", "sft_accepted", "sft_rejected", "pairs", "mean_margin"]
    extra = sorted({k for r in stats["rounds"] for k in r if k.startswith(("pairs_", "videos_"))})
    cols += extra  # pairs per feedback level and videos by status, once video feedback has been collected
    t = Table("round", *cols, title="per round")
    for r in stats["rounds"]:
        t.add_row(r["round"], *(str(r.get(c, 0)) for c in cols))
    out.print(t)
    peak = max([b["pairs"] for b in stats["margin_histogram"]] + [1])
    t = Table("margin", "pairs", "", title="margin histogram")
    for b in stats["margin_histogram"]:
        t.add_row(f"{b['from']:.2f}-{b['to']:.2f}", str(b["pairs"]), "#" * round(30 * b["pairs"] / peak))
    out.print(t)
    t = Table("round", "principle", "n", "mean", "p10", "p50", "p90", title="critic scores")
    for p in stats["principles"]:
        t.add_row(p["round"], p["principle"], str(p["n"]), *(f"{p[k]:.2f}" for k in ("mean", "p10", "p50", "p90")))
    out.print(t)


# --- rewrite / guard ----------------------------------------------------------------
def _read_prompt_lines(rt: Runtime, file: Path) -> list[str]:
    from promptloop.store.importer import read_prompt_file

    return [r.text.strip() for r in read_prompt_file(file, max_chars=rt.settings.max_prompt_chars)]


def _resume_point(out_path: Path, prompts: list[str]) -> int:
    """Lines already written for the same prompts in the same order (a crashed run continues there)."""
    if not out_path.exists():
        return 0
    done = 0
    for line in out_path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if done >= len(prompts) or row.get("prompt") != prompts[done]:
            raise UserError(f"{out_path} holds results for other prompts; choose another --out or delete it")
        done += 1
    return done


def _write_jsonl(out_path: Path, rows: list[dict], keep: int) -> None:
    """Atomically rewrite the file as its first ``keep`` lines plus ``rows`` (run once per command)."""
    import os
    import tempfile

    old = out_path.read_text(encoding="utf-8").splitlines()[:keep] if out_path.exists() else []
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for line in old:
            fh.write(line + "\n")
        _write_rows(fh, rows)
    os.replace(tmp, out_path)


def _write_rows(fh, rows: list[dict]) -> None:  # noqa: ANN001
    """Whole lines, flushed to disk: a crash can cut at most the last line, which resume discards."""
    import os

    fh.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    fh.flush()
    os.fsync(fh.fileno())


@app.command()
def rewrite(
    ctx: typer.Context,
    prompts: Annotated[list[str] | None, typer.Argument(help="User prompt(s); several are batched in one run")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Prompts file (.txt one per line, .jsonl, .csv)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="With --file: JSONL output, one object per input line")] = None,
    n: Annotated[int, typer.Option(min=1, max=64, help="Candidates sampled per prompt")] = 4,
    model_version: Annotated[str, typer.Option(help="base | champion | a version name")] = "champion",
    max_refine_steps: Annotated[int | None, typer.Option(min=0, max=10)] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="0 = greedy")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="With --file: prompts per graph run")] = 16,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rewrite prompts with the agent graph: guard, n candidates, critique, refine, final guard."""
    from promptloop.api import rewrite_many, stream_rewrite

    rt = _rt(ctx)
    overrides = dict(n=n, max_refine_steps=max_refine_steps, max_new_tokens=max_new_tokens, temperature=temperature)
    if file is not None:
        if prompts:
            raise UserError("give prompts as arguments or with --file, not both")
        if out_path is None:
            raise UserError("--file needs --out OUT.jsonl")
        lines = _read_prompt_lines(rt, file)
        start = _resume_point(out_path, lines)
        if start:
            console.print(f"{out_path}: {start} of {len(lines)} already done, continuing")
        _write_jsonl(out_path, [], keep=start)  # drop a line a crash may have cut short, once
        with progress_bar(console) as progress, out_path.open("a", encoding="utf-8") as fh:
            task = progress.add_task("rewriting", total=len(lines), completed=start)
            for i in range(start, len(lines), batch_size):
                chunk = lines[i:i + batch_size]
                results = rewrite_many(chunk, runtime=rt, model_version=model_version, **overrides)
                _write_rows(fh, [r.model_dump(include=_LINE_KEYS) for r in results])
                progress.advance(task, len(chunk))
        console.print(f"wrote {len(lines)} results to {out_path}")
        return
    if not prompts:
        raise UserError("give a prompt, or --file PROMPTS --out OUT.jsonl")
    results = []
    with console.status("loading models") as status:
        for kind, value in stream_rewrite(prompts, runtime=rt, model_version=model_version, **overrides):
            if kind == "node":
                status.update(f"[bold]{value}[/] done")
                console.print(f"  [dim]node[/] {value}")
            else:
                results = value
    if as_json:
        _print_json([r.model_dump() for r in results] if len(results) > 1 else results[0].model_dump())
        return
    for r in results:
        out.print(f"[bold cyan]{r.prompt}[/]")
        if r.refused:
            out.print(f"  [red]refused[/]: {r.reason}")
        else:
            out.print(f"  {r.final_prompt}")
            sc = "  ".join(f"{k} {v:.2f}" for k, v in r.scores.items())
            out.print(f"  [dim]{sc}  reward {r.reward.get('total', 0):.2f}  refine steps {r.refine_steps}[/]")
        out.print(f"  [dim]trace {r.trace_id}[/]")


_LINE_KEYS = {"prompt", "final_prompt", "refused", "reason", "scores", "reward", "trace_id", "model_version",
              "refine_steps"}


@app.command()
def guard(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Argument(help="Text to check")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="One text per line (.txt/.jsonl/.csv)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="With --file: JSONL, one verdict per input line")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The safety guard's verdict: allow, sanitize (rewrite safely) or block, with category scores."""
    rt = _rt(ctx)
    if file is not None:
        if out_path is None:
            raise UserError("--file needs --out OUT.jsonl")
        lines = _read_prompt_lines(rt, file)
        verdicts = []
        for i in range(0, len(lines), 64):
            verdicts += rt.guard.check_many(lines[i:i + 64])
        _write_jsonl(out_path, [_verdict_row(v) for v in verdicts], keep=0)
        flagged = sum(not v.safe for v in verdicts)
        console.print(f"{len(verdicts)} verdicts written to {out_path}: {flagged} unsafe")
        return
    if not text or not text.strip():
        raise UserError("give a text to check, or --file F --out OUT.jsonl")
    v = rt.guard.check(text)
    if as_json:
        _print_json(_verdict_row(v))
        return
    color = {"allow": "green", "sanitize": "yellow", "block": "red"}[v.action]
    out.print(f"[{color}]{v.action}[/]  safe={v.safe}  {v.reason}")
    for k, c in sorted(v.categories.items(), key=lambda kv: -kv[1].score):
        out.print(f"  {k:16s} {c.score:.2f}  {c.evidence}")


def _verdict_row(v) -> dict:  # noqa: ANN001
    return {"text": v.text, "safe": v.safe, "action": v.action, "reason": v.reason, "categories": v.scores(),
            "evidence": {k: c.evidence for k, c in v.categories.items()}}


# --- collect ------------------------------------------------------------------------
def _collect(ctx: typer.Context, kind: str, split: str, limit: int | None, round_index: int, n: int,
             model_version: str, batch_size: int | None, worker: str | None = None,
             concurrency: int | None = None, **ctx_overrides) -> None:
    import time

    from promptloop.graphs.collection import collect, select_prompts

    rt = _rt(ctx)
    rt.upgrade_db()
    prompts = select_prompts(rt.engine, split, limit)
    found_key = {"pairs": "pairs", "sft": "accepted", "evolve": "sft_evolve"}[kind]
    t0 = time.perf_counter()
    with collection_progress(f"collect {kind} r{round_index}", len(prompts), found_key) as on_chunk:
        report = collect(rt, kind, split=split, limit=limit, round_index=round_index, n=n,
                         model_version=model_version, batch_size=batch_size, prompts=prompts, on_chunk=on_chunk,
                         worker=worker, max_concurrency=concurrency, **ctx_overrides)
    if worker:
        console.print(f"worker {worker}: ", end="")
    console.print(f"{report.prompts} prompts in {report.chunks} chunk(s) ({report.skipped_chunks} already done, "
                  f"{report.resumed_chunks} resumed) in {time.perf_counter() - t0:.1f} s: "
                  + ", ".join(f"{k} {v}" for k, v in report.stored.items()))


_SPLIT = typer.Option(help="Prompt split to collect from")
_LIMIT = typer.Option(min=1, help="At most this many prompts")
_ROUND = typer.Option("--round", min=0, help="Round index the rows belong to")
_VERSION = typer.Option(help="Rewriter version that samples: base | champion | NAME")
_BATCH = typer.Option(min=1, help="Prompts per checkpointed graph run (default collect.chunk_size)")
_PART = typer.Option(min=1, help="Prompts per fanned-out part: one batched pass of the pipeline, model calls "
                     "batched across them (default collect.part_size)")
_CONCURRENCY = typer.Option(min=1, max=256, help="Parts in flight at once, LangGraph max_concurrency (default "
                            "collect.max_concurrency; raise it for a served backend that batches requests)")
_WORKER = typer.Option(help="Share this collection with other workers on the same store (each started with the "
                       "same arguments and its own name): prompts are claimed in chunks, none processed twice")


@collect_app.command("sft")
def collect_sft(
    ctx: typer.Context,
    split: Annotated[str, _SPLIT] = "train",
    limit: Annotated[int | None, _LIMIT] = None,
    round_index: Annotated[int, _ROUND] = 0,
    n: Annotated[int, typer.Option(min=1, max=64, help="Candidates sampled per prompt")] = 4,
    model_version: Annotated[str, _VERSION] = "base",
    batch_size: Annotated[int | None, _BATCH] = None,
    part_size: Annotated[int | None, _PART] = None,
    concurrency: Annotated[int | None, _CONCURRENCY] = None,
    max_refine_steps: Annotated[int | None, typer.Option(min=0, max=10)] = None,
    worker: Annotated[str | None, _WORKER] = None,
) -> None:
    """VPO stage 1: rewrite, critique, refine until the principles pass, store SFT examples (and rejects)."""
    _collect(ctx, "sft", split, limit, round_index, n, model_version, batch_size, worker, concurrency,
             part_size=part_size, max_refine_steps=max_refine_steps)


@collect_app.command("evolve")
def collect_evolve(
    ctx: typer.Context,
    split: Annotated[str, _SPLIT] = "train",
    limit: Annotated[int | None, _LIMIT] = None,
    round_index: Annotated[int, _ROUND] = 0,
    model_version: Annotated[str, _VERSION] = "base",
    batch_size: Annotated[int | None, _BATCH] = None,
    part_size: Annotated[int | None, _PART] = None,
    concurrency: Annotated[int | None, _CONCURRENCY] = None,
    generations: Annotated[int, typer.Option(min=1, max=50, help="Generations (Prompt-A-Video uses about 8)")] = 3,
    population: Annotated[int, typer.Option(min=2, max=64, help="Individuals kept per prompt (elitism)")] = 4,
    offspring: Annotated[int, typer.Option(min=1, max=64, help="New prompts written per generation")] = 4,
    top_k: Annotated[int, typer.Option(min=1, help="Best individuals per prompt that become SFT examples")] = 1,
    worker: Annotated[str | None, _WORKER] = None,
) -> None:
    """Prompt-A-Video stage 1: evolve rewrites by LLM mutation/crossover with reward fitness; top ones to SFT."""
    _collect(ctx, "evolve", split, limit, round_index, population, model_version, batch_size, worker, concurrency,
             part_size=part_size, generations=generations, population=population, offspring=offspring, top_k=top_k)


@collect_app.command("pairs")
def collect_pairs(
    ctx: typer.Context,
    split: Annotated[str, _SPLIT] = "train",
    limit: Annotated[int | None, _LIMIT] = None,
    round_index: Annotated[int, _ROUND] = 1,
    n: Annotated[int, typer.Option(min=2, max=64, help="Candidates sampled per prompt")] = 4,
    model_version: Annotated[str, _VERSION] = "base",
    batch_size: Annotated[int | None, _BATCH] = None,
    part_size: Annotated[int | None, _PART] = None,
    concurrency: Annotated[int | None, _CONCURRENCY] = None,
    margin: Annotated[float, typer.Option(min=0.0, help="Minimum reward-total gap between chosen and rejected")] = 0.1,
    rule: Annotated[str, typer.Option(help="margin | pareto | gated (see graphs/collect_pairs.py)")] = "margin",
    pairs_per_prompt: Annotated[int, typer.Option(min=1)] = 1,
    worker: Annotated[str | None, _WORKER] = None,
    video: Annotated[bool, typer.Option("--video/--no-video", help="Render every candidate with the video model "
                                        "(video.model) and add video-level feedback")] = False,
    seeds: Annotated[int | None, typer.Option(min=1, max=16, help="Renders per candidate with --video "
                                              "(default video.seeds)")] = None,
    video_share: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Video total's weight in the "
                                                      "combined reward (default video.share)")] = None,
) -> None:
    """VPO stage 2: sample n candidates, score them, store preference pairs (chosen, rejected, margin).

    With --video each candidate is rendered (seeds per candidate), scored on its videos against the user's
    prompt, and pairs are labelled by the feedback that supports them (text / video / both)."""
    from promptloop.graphs.collect_pairs import RULES

    if rule not in RULES:
        raise UserError(f"unknown pair rule '{rule}'; expected one of {', '.join(RULES)}")
    if not video and (seeds is not None or video_share is not None):
        raise UserError("--seeds and --video-share only apply with --video")
    extra = dict(video=True, video_seeds=seeds, video_share=video_share) if video else {}
    _collect(ctx, "pairs", split, limit, round_index, n, model_version, batch_size, worker, concurrency,
             part_size=part_size, max_refine_steps=0, margin=margin, rule=rule, max_pairs_per_prompt=pairs_per_prompt, **extra)


# --- traces -------------------------------------------------------------------------
@traces_app.command("list")
def traces_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    graph: Annotated[str | None, typer.Option(help="Only runs of this graph (e.g. rewrite)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recent graph runs, newest first."""
    from promptloop.store.traces import list_runs

    rt = _rt(ctx)
    rt.upgrade_db()
    runs = list_runs(rt.engine, limit=limit, graph=graph)
    if as_json:
        _print_json(runs)
        return
    table = Table("trace id", "graph", "started", "nodes", "node time", "errors")
    for r in runs:
        table.add_row(r["trace_id"], r["graph"], str(r["started_at"])[:19], str(r["nodes"]),
                      f"{r['node_ms'] / 1000:.1f} s", str(r["errors"]))
    out.print(table)


@traces_app.command("show")
def traces_show(
    ctx: typer.Context,
    trace_id: Annotated[str, typer.Argument(help="Trace id (a unique prefix is enough)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One run as a tree: each node with timing, candidates, critique scores, verdicts and the output."""
    from rich.tree import Tree

    from promptloop.store.traces import run_events

    rt = _rt(ctx)
    rt.upgrade_db()
    events = run_events(rt.engine, trace_id)
    if as_json:
        _print_json([e.model_dump() for e in events])
        return
    tree = Tree(f"[bold]{events[0].graph}[/] run {events[0].thread_id}  ({sum(e.duration_ms or 0 for e in events) / 1000:.1f} s)")
    for e in events:
        label = f"[bold]{e.node}[/]  {(e.duration_ms or 0) / 1000:.2f} s"
        if e.model_version:
            label += f"  [dim]model {e.model_version}[/]"
        node = tree.add(label + (f"  [red]error: {e.error}[/]" if e.error else ""))
        for it in (e.output or {}).get("items", []):
            _trace_item(node, e.node, it)
    out.print(tree)


def _trace_item(node, name: str, it: dict) -> None:  # noqa: ANN001
    br = node.add(f"[cyan]{it.get('prompt', '')}[/]")
    if name in ("guard_input", "guard_output"):
        v = it.get("verdict" if name == "guard_input" else "final_verdict") or {}
        if v:
            br.add(f"verdict: {v.get('action')} (safe={v.get('safe')}) {v.get('reason', '')}")
        if it.get("refused"):
            br.add(f"[red]refused[/]: {it.get('reason', '')}")
        if name == "guard_output" and it.get("final_prompt"):
            br.add(f"[green]final[/]: {it['final_prompt']}")
    elif name == "rewrite":
        for i, c in enumerate(it.get("candidates", []), 1):
            br.add(f"{i}. {c}")
    elif name == "critique":
        for c, k, r in zip(it.get("candidates", []), it.get("critiques", []), it.get("rewards", []), strict=False):
            br.add(f"harmless {k['harmless']:.2f} accurate {k['accurate']:.2f} helpful {k['helpful']:.2f} "
                   f"reward {r['total']:.2f}  [dim]{c[:80]}[/]")
    elif name in ("pick_best", "refine"):
        if it.get("trail"):
            t = it["trail"][-1]
            br.add(f"step {t['step']} ({t['origin']}) reward {t['reward']:.2f}: {t['text'][:120]}")


def main() -> None:
    try:
        app(standalone_mode=True)
    except (PromptloopError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(2)



if __name__ == "__main__":  # pragma: no cover
    main()
