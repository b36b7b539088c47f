"""`promptloop data export|stats`: training data for TRL, and what the store holds per round."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from promptloop.commands.shared import UserError, console, out, print_json, services_of

app = typer.Typer(help="Training data export (TRL formats).", no_args_is_help=True)


@app.command("export")
def data_export(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="sft | dpo")],
    out_path: Annotated[Path, typer.Argument(metavar="OUT", help="jsonl file or hf dataset folder")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl | hf (a Hub-layout dataset folder: "
                                                         "parquet + dataset card; load_dataset(folder) and `trl "
                                                         "sft|dpo --dataset_name folder` read it)")] = "jsonl",
    round_id: Annotated[int | None, typer.Option("--round", help="Only this round's data")] = None,
) -> None:
    """Export SFT examples (messages) or preference pairs (prompt/chosen/rejected) for TRL."""
    from promptloop.store.exporter import export

    if kind not in ("sft", "dpo"):
        raise UserError(f"unknown export kind '{kind}'; expected sft or dpo")
    if fmt not in ("jsonl", "hf"):
        raise UserError(f"unknown format '{fmt}'; expected jsonl or hf")
    rt = services_of(ctx)
    rewriter = rt.rewriter(with_model=False)
    n = export(rt.engine, kind, out_path, rewriter.messages_for, fmt=fmt, round_id=round_id)  # type: ignore[arg-type]
    console.print(f"wrote {n} {kind} rows to {out_path} ({fmt})")


@app.command("stats")
def data_stats_cmd(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Counts per round, the pairs' margin histogram and principle score distributions.

    Per round also the pairs' mean words per side, the share whose chosen side is over ``collect.length_ratio``
    times longer than the rejected side, and the share whose rejected side is degenerate.
    """
    from promptloop.agents.text_checks import words
    from promptloop.store.stats import data_stats

    rt = services_of(ctx)
    stats = data_stats(rt.engine, length_ratio=rt.settings.collect.length_ratio, count_words=lambda t: len(words(t)))
    if as_json:
        print_json(stats)
        return
    cols = ["candidates", "sft_accepted", "sft_rejected", "pairs", "mean_margin", "chosen_words", "rejected_words",
            "longer_chosen_share", "degenerate_rejected_share"]
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


