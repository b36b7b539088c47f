"""`promptloop eval`: versions and baselines on a held-out set, as a table, a JSON file and plots."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promptloop.evaluation.runner import EvalConfig, EvalReport
    from promptloop.services import Services

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from promptloop.commands.shared import console, out, print_json, services_of


def run_eval(rt: Services, systems: list[str], cfg: EvalConfig, *, out_dir: Path, title: str = ""
             ) -> tuple[EvalReport, Path, Path | None]:
    """Evaluate, then write <out_dir>/eval-<bench>.json and .png; returns the report and the paths."""
    from promptloop.evaluation.report import plot_rounds, write_json
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as prog:
        task = prog.add_task("evaluating", total=None)
        report = rt.evaluate(systems, cfg, progress=lambda m: prog.update(task, description=m))
    js = write_json(report, out_dir / f"eval-{report.bench}.json")
    png = plot_rounds(report.results, out_dir / f"eval-{report.bench}.png",
                      title=title or f"{report.bench}: {report.n_prompts} held-out prompts")
    return report, js, png


def eval_cmd(
    ctx: typer.Context,
    bench: Annotated[str, typer.Option(help="eval = the store's held-out split; vbench = the 946 VBench prompts "
                                            "with the public GPT-4o / Wan2.1 / HunyuanVideo rewrites")] = "eval",
    limit: Annotated[int | None, typer.Option(min=1, help="Evenly spaced subset of this many prompts")] = None,
    redteam_limit: Annotated[int | None, typer.Option(min=0, help="Harmful and benign red-team prompts each "
                                                                  "(0 = skip; default all)")] = None,
    systems: Annotated[list[str] | None, typer.Option("--system", help="raw | base | champion | public:NAME | "
                                                                       "a version name (repeat; default: all)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Where the JSON and PNG go (default <home>/reports)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Evaluate rewriter versions and baselines on held-out prompts (intent, coverage, safety, judge)."""
    from promptloop.evaluation.report import table
    from promptloop.evaluation.runner import EvalConfig, default_systems

    rt = services_of(ctx)
    cfg = EvalConfig(bench=bench, limit=limit, redteam_limit=redteam_limit, max_new_tokens=max_new_tokens)
    report, js, png = run_eval(rt, systems or default_systems(rt, bench), cfg,
                               out_dir=out_dir or rt.settings.reports_dir)
    if as_json:
        print_json(report.to_json())
    else:
        out.print(table(report))
    console.print(f"wrote {js}" + (f" and {png}" if png else ""))
