"""`promptloop eval`: versions and baselines on a held-out set, as a table, a JSON file and plots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from promptloop.commands.shared import console, out, print_json, services_of

if TYPE_CHECKING:
    from promptloop.evaluation.runner import EvalConfig, EvalReport
    from promptloop.services import Services


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
    bench: Annotated[str, typer.Option(help="eval = the store's held-out split; vbench = vbench-test, the quarter "
                                            "of the 946 VBench prompts never trained on (vbench-train, vbench-all "
                                            "too), with the public GPT-4o / Wan2.1 / HunyuanVideo rewrites")
                     ] = "eval",
    limit: Annotated[int | None, typer.Option(min=1, help="Evenly spaced subset of this many prompts")] = None,
    redteam_limit: Annotated[int | None, typer.Option(min=0, help="Harmful and benign prompts each of the "
                                                                  "red-team holdout, through the full rewrite graph "
                                                                  "(0 = skip; default all)")] = None,
    redteam_file: Annotated[str, typer.Option(help="Which red-team holdout: redteam_holdout.csv, "
                                                   "redteam_holdout_b.csv (written before the changes it "
                                                   "measures), redteam_holdout_c.csv (written after the "
                                                   "sanitiser's rules were chosen) or redteam_holdout_d.csv "
                                                   "(written before the guard's training rows were widened)")
                            ] = "redteam_holdout.csv",
    systems: Annotated[list[str] | None, typer.Option("--system", help="raw | base | champion | public:NAME | "
                                                                       "a version name (repeat; default: all)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Where the JSON and PNG go (default <home>/reports)")] = None,
    allow_contaminated: Annotated[bool, typer.Option(help="Evaluate versions that trained on some of the bench's "
                                                     "prompts (refused otherwise); the table marks them")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Evaluate rewriter versions and baselines on held-out prompts (intent, coverage, safety, judge).

    A version trained on any of the bench's prompts (by prompt hash, its ancestors' data included) is refused
    unless --allow-contaminated is given, and then marked in the table and the JSON.

    With a pairwise judge configured (the eval.judge setting, e.g. a capable model behind an OpenAI-compatible
    server), every system's rewrites are also compared with the champion's, both orders asked.
    """
    from promptloop.evaluation.report import has_matplotlib, safety_table, table
    from promptloop.evaluation.runner import EvalConfig, default_systems

    rt = services_of(ctx)
    cfg = EvalConfig(bench=bench, limit=limit, redteam_limit=redteam_limit, redteam_file=redteam_file,
                     max_new_tokens=max_new_tokens,
                     allow_contaminated=allow_contaminated)
    systems = systems or default_systems(rt, bench)
    if rt.settings.eval.judge is not None and "champion" not in systems:
        systems = [*systems, "champion"]  # the pairwise judge compares every system with it
    report, js, png = run_eval(rt, systems, cfg, out_dir=out_dir or rt.settings.reports_dir)
    decisions = promotion_decisions(rt, [r.version for r in report.results if r.version])
    pairwise = pairwise_vs_champion(rt, report)
    if as_json:
        print_json({**report.to_json(), "decisions": decisions, "pairwise": pairwise})
    else:
        out.print(table(report))
        if (safety := safety_table(report)) is not None:
            out.print(safety)
        for r in report.results:
            if r.contaminated:
                out.print(f"[red]CONTAMINATED[/]: {r.label} trained on {r.contaminated} of the {report.n_prompts} "
                          "evaluated prompts (--allow-contaminated): its scores here measure memory, not skill")
        if decisions:
            out.print(decisions_table(decisions))
        if pairwise:
            out.print(pairwise_table(pairwise))
    console.print(f"wrote {js}" + (f" and {png}" if png else "") + ("" if has_matplotlib() else
                  " (no PNG: pip install 'promptloop[plots]' for the plots)"))


def promotion_decisions(rt: Services, versions: list[str]) -> dict[str, dict]:
    """The promotion gate's recorded decision for each evaluated version that went through it."""
    from promptloop.store.versions import get_version

    found = {}
    for name in dict.fromkeys(versions):
        decision = (get_version(rt.engine, name).metrics or {}).get("decision")
        if decision and "rule" in decision:
            found[name] = decision
    return found


def decisions_table(decisions: dict[str, dict]) -> Table:
    t = Table("version", "decision", "primary gain [interval]", "guardrails (parent -> candidate, tolerance)",
              title="promotion decisions", header_style="bold")
    for name, d in decisions.items():
        p = d.get("primary") or {}
        gain = f"{p['metric']} {p['gain']:+.4f} [{p['interval'][0]:+.3f}, {p['interval'][1]:+.3f}]" if p else "-"
        guards = "; ".join(f"{'ok' if g['passed'] else '[red]FAIL[/]'} {g['metric']} {g['parent']} -> "
                           f"{g['candidate']} (±{g['tolerance']:g})" for g in d.get("guardrails", []))
        t.add_row(name, ("[green]promoted[/]" if d["promoted"] else "kept champion") + f" ({d['rule']})", gain, guards)
    return t


def pairwise_vs_champion(rt: Services, report: EvalReport) -> dict[str, dict]:
    """The pairwise judge's verdict for each evaluated system against the champion; {} without a judge."""
    if rt.settings.eval.judge is None:
        return {}
    from promptloop.evaluation.runner import load_items
    from promptloop.store.versions import get_version

    champion = get_version(rt.engine, "champion").name
    by_system = {r.system: r for r in report.results if r.outputs_path}
    if champion not in by_system:
        return {}
    reference = [r["output"] for r in load_items(by_system[champion].outputs_path)]
    found = {}
    for name, res in by_system.items():
        if name != champion:
            items = load_items(res.outputs_path)
            found[name] = {**rt.pairwise([r["prompt"] for r in items], [r["output"] for r in items], reference),
                           "champion": champion}
    return found


def pairwise_table(pairwise: dict[str, dict]) -> Table:
    t = Table("system", "win", "tie", "loss", "invalid", "win rate", "first-position rate", "order agreement",
              title=f"pairwise judge vs the champion ({next(iter(pairwise.values()))['champion']}), both orders",
              caption="win/loss only when both orders agree (else tie); first-position rate 0.5 = no position bias",
              header_style="bold")

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for name, p in pairwise.items():
        t.add_row(name, str(p["wins"]), str(p["ties"]), str(p["losses"]), str(p["invalid"]), num(p["win_rate"]),
                  num(p["first_position_rate"]), num(p["consistency"]))
    return t
