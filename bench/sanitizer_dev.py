"""The sanitiser's development table: VPO's classes of the cores it gives, on the guard's own training rows.

    python bench/sanitizer_dev.py [--folds 5] [--no-patterns] [--graph] [--show unsafe,imprecise]

Every row of data/redteam.csv carries the holdouts' rubric (``keep``/``harm``);
the classifier is refitted without each row's fold, so each core is judged by
a guard that never saw its request. Choices about the sanitiser and its
thresholds are made on this table, and the holdouts are only read to report.
The categories' patterns were written on these rows: ``--no-patterns`` shows
the classifier and sanitiser alone. ``--graph`` judges the final prompts of
the whole rewrite graph (base rewriter, critic, output guard, each fold's
guard in every place the graph uses one) instead of the cores: what `eval`
measures on a holdout, in about ten minutes on two cores.

Writes $PROMPTLOOP_HOME/reports/sanitizer_dev[-no-patterns][-graph].json.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from promptloop.agents.safety.guard import training_examples
from promptloop.commands.shared import quiet_libraries
from promptloop.config import Settings
from promptloop.evaluation.guard_figures import fold_guards, sanitiser_outcomes
from promptloop.evaluation.safety import RubricRow, classify, load_dev_rubric, per_category, safety_metrics
from promptloop.services import Services


def _graph_outcomes(rt: Services, rubric: list[RubricRow], folds: int, patterns: bool) -> list[tuple[str | None, str]]:
    """The rewrite graph's final prompt (None when refused) and its class per row, each fold's rows through a
    graph whose guard (and the critic's, which scores harmlessness with it) never saw them."""
    out: list[tuple[str | None, str]] = [(None, "")] * len(rubric)
    for k, (guard, todo) in enumerate(fold_guards(rt.embedder, training_examples(), rubric, rt.settings.guard,
                                                  folds=folds, patterns=patterns)):
        print(f"  fold {k + 1}/{folds}: {len(todo)} rows through the rewrite graph", flush=True)
        rt.__dict__["guard"] = guard  # Services caches its guard and critic: this fold's guard replaces both
        rt.__dict__.pop("critic", None)
        finals = rt.graph_rewrite([rubric[n].prompt for n in todo], None, rt.settings.generation.max_new_tokens)
        for n, (final, refused) in zip(todo, finals, strict=True):
            out[n] = (None if refused else final, classify(rubric[n], final, refused))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-patterns", action="store_true", help="score without the categories' patterns")
    ap.add_argument("--graph", action="store_true", help="judge the rewrite graph's final prompts, not the cores")
    ap.add_argument("--show", default="unsafe,imprecise", help="classes whose rows are listed (comma-separated)")
    args = ap.parse_args()
    quiet_libraries()
    rt = Services(Settings())
    rubric = load_dev_rubric()
    if args.graph:
        outcomes = _graph_outcomes(rt, rubric, args.folds, not args.no_patterns)
    else:
        outcomes = sanitiser_outcomes(rt.embedder, training_examples(), rubric, rt.settings.guard,
                                      folds=args.folds, patterns=not args.no_patterns)
    classes = [c for _, c in outcomes]
    metrics, _ = safety_metrics(rubric, [core or "" for core, _ in outcomes], [core is None for core, _ in outcomes])
    print(f"data/redteam.csv out of fold ({args.folds} folds, patterns {'off' if args.no_patterns else 'on'}, "
          f"{'rewrite graph' if args.graph else 'sanitiser cores'}): "
          f"{metrics['redteam_harmful_n']} harmful, {metrics['redteam_n'] - metrics['redteam_harmful_n']} benign")
    print("  aligned  unsafe  imprecise  refusal  refused-with-core  benign kept")
    print(f"  {metrics['safety_aligned']:7.1%} {metrics['safety_unsafe']:7.1%} {metrics['safety_imprecise']:10.1%} "
          f"{metrics['safety_refusal']:8.1%} {metrics['refusal_with_core']:18.1%} {metrics['benign_kept']:12.1%}")
    print("\n  category          " + "  ".join(f"{c:>9s}" for c in ("aligned", "unsafe", "imprecise", "refusal",
                                                                      "kept", "lost", "refused")))
    for cat, counts in per_category(rubric, classes).items():
        print(f"  {cat:16s}  " + "  ".join(f"{counts.get(c, 0):9d}" for c in ("aligned", "unsafe", "imprecise",
                                                                               "refusal", "kept", "lost", "refused")))
    show = set(args.show.split(","))
    for r, (core, c) in zip(rubric, outcomes, strict=True):
        if c in show:
            print(f"  [{c}] {r.prompt!r} -> {core!r}")
    rt.settings.reports_dir.mkdir(parents=True, exist_ok=True)
    name = "sanitizer_dev" + ("-no-patterns" if args.no_patterns else "") + ("-graph" if args.graph else "")
    (rt.settings.reports_dir / f"{name}.json").write_text(json.dumps(
        {"folds": args.folds, "patterns": not args.no_patterns, "graph": args.graph, "metrics": metrics, "counts": dict(Counter(classes)),
         "rows": [{"prompt": r.prompt, "core": core, "class": c} for r, (core, c) in zip(rubric, outcomes,
                                                                                           strict=True)]}, indent=2))


if __name__ == "__main__":
    main()
