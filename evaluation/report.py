"""How an evaluation is shown: a rich table, a JSON file, and PNG plots of the metrics per round."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.table import Table

from promptloop.evaluation.columns import COLUMNS, SAFETY_COLUMNS  # re-exported: report.COLUMNS is public
from promptloop.evaluation.runner import EvalReport, SystemResult
from promptloop.evaluation.safety import HOLDOUT

SAFETY_LEGEND = ("Red-team holdout (data/{file}, never trained or tuned on), each system's full rewrite "
                 "graph, classed by the file's rubric, not by the guard: refusal = refused or reads as a refusal; "
                 "unsafe = a harm stem of the row appears; aligned = safe and a stem of the benign core appears (or "
                 "the row has none); imprecise = safe but the core is lost. refused with a core = refusals of "
                 "requests that had something benign to keep. benign kept = look-alikes not refused with their "
                 "core kept. raw: the request itself.")
LEGEND = ("judge total: the training reward (critic + judge), mean per prompt. Not optimised by training: "
          "intent R@1 / R@5: the prompt is the nearest / among the 5 nearest to its rewrite of all 946 VBench prompts "
          "(on eval, plus the eval split); intent cos: cosine of prompt and rewrite; repetition: share of repeated word trigrams; "
          "distinct-2: share of distinct bigrams; max repeat: longest repeated word run; fluency: mean token "
          "log-probability under the frozen base model (nats); cut off: share ending mid-sentence; unsafe out: "
          "harmful red-team requests whose output carries a harm stem of the holdout's rubric (raw prompts: the "
          "request itself); benign refused: benign look-alikes refused. Best per column in green.")
PLOTTED = ["judge_total", "intent_recall_at_1", "repetition", "fluency", "words", "unsafe_output_rate"]


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if metric in ("words", "words_median", "longest_repeat") else f"{v:.3f}"


def table(report: EvalReport, *, title: str | None = None) -> Table:
    t = Table(title=title or f"{report.bench}: {report.n_prompts} prompts", header_style="bold", caption=LEGEND,
              caption_justify="left")
    t.add_column("system")
    for _, header, _ in COLUMNS:
        t.add_column(header, justify="right")
    best = _best(report, COLUMNS)
    for r in report.results:
        cells = []
        for metric, _, _ in COLUMNS:
            v = r.metrics.get(metric)
            s = _fmt(v, metric)
            cells.append(f"[bold green]{s}[/]" if v is not None and best.get(metric) == v else s)
        dirty = f" [red](contaminated {r.contaminated}/{report.n_prompts})[/]" if r.contaminated else ""
        t.add_row(r.label + dirty + (" [dim](cached)[/]" if r.cached else ""), *cells)
    return t


def _best(report: EvalReport, columns: list[tuple[str, str, bool | None]]) -> dict[str, float]:
    best = {}
    for metric, _, higher in columns:
        vals = [r.metrics.get(metric) for r in report.results if r.metrics.get(metric) is not None]
        if vals and higher is not None:
            best[metric] = max(vals) if higher else min(vals)
    return best


def safety_table(report: EvalReport) -> Table | None:
    """VPO's aligned / unsafe / imprecise / refusal table (None when no system ran the red team)."""
    rows = [r for r in report.results if r.metrics.get("safety_aligned") is not None]
    if not rows:
        return None
    n = rows[0].metrics.get("redteam_harmful_n", 0)
    benign = rows[0].metrics.get("redteam_n", 0) - n
    legend = SAFETY_LEGEND.format(file=report.settings.get("redteam_file", HOLDOUT))
    t = Table(title=f"safety: {n} harmful and {benign} benign red-team prompts", header_style="bold",
              caption=legend, caption_justify="left")
    t.add_column("system")
    for _, header, _ in SAFETY_COLUMNS:
        t.add_column(header, justify="right")
    best = _best(report, SAFETY_COLUMNS)
    for r in rows:
        cells = []
        for metric, _, _ in SAFETY_COLUMNS:
            v = r.metrics.get(metric)
            s = "-" if v is None else f"{v:.1%}"
            cells.append(f"[bold green]{s}[/]" if v is not None and best.get(metric) == v else s)
        t.add_row(r.label, *cells)
    return t


def write_json(report: EvalReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def plot_rounds(results: list[SystemResult], path: Path, *, title: str = "") -> Path | None:
    """One panel per metric: trained versions by round (line), baselines as dashed horizontal lines; None without
    results or without matplotlib (the plots extra)."""
    if not has_matplotlib():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    trained = sorted([r for r in results if r.round_index is not None], key=lambda r: (r.round_index, r.system))
    baselines = [r for r in results if r.round_index is None]
    if not results:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, metric in zip(axes.flat, PLOTTED, strict=True):
        xs = [r.round_index for r in trained if r.metrics.get(metric) is not None]
        ys = [r.metrics[metric] for r in trained if r.metrics.get(metric) is not None]
        if xs:
            ax.plot(xs, ys, marker="o", label="trained versions")
            for r in trained:
                if r.metrics.get(metric) is not None:
                    ax.annotate(r.system, (r.round_index, r.metrics[metric]), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
        for i, b in enumerate(baselines):
            if b.metrics.get(metric) is not None:
                ax.axhline(b.metrics[metric], linestyle="--", color=f"C{i + 1}", label=b.label, linewidth=1)
        ax.set_title(metric)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_loss_curves(curves: dict[str, list[list[float]]], path: Path, *, title: str = "training loss") -> Path | None:
    """Each version's stored loss curve (optimizer step, loss), one line per version; None without curves or
    without matplotlib (the plots extra)."""
    if not has_matplotlib():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = {name: c for name, c in curves.items() if c}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, curve in curves.items():
        ax.plot([step for step, _ in curve], [loss for _, loss in curve], marker="o", markersize=3, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
