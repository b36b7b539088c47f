"""The sanitiser's development table: VPO's classes of the cores it gives, on the guard's own training rows.

    python bench/sanitizer_dev.py [--folds 5] [--no-patterns] [--show unsafe,imprecise,refusal,lost]

Every row of data/redteam.csv carries the holdouts' rubric (``keep``/``harm``);
the classifier is refitted without each row's fold, so each core is judged by
a guard that never saw its request. Choices about the sanitiser and its
thresholds are made on this table, and the holdouts are only read to report.
The categories' patterns were written on these rows: ``--no-patterns`` shows
the classifier and sanitiser alone.

Writes $PROMPTLOOP_HOME/reports/sanitizer_dev[-no-patterns].json.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from promptloop.agents.safety.guard import training_examples
from promptloop.config import Settings
from promptloop.evaluation.guard_figures import sanitiser_outcomes
from promptloop.evaluation.safety import load_dev_rubric, per_category, safety_metrics
from promptloop.services import Services


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-patterns", action="store_true", help="score without the categories' patterns")
    ap.add_argument("--show", default="unsafe,imprecise", help="classes whose rows are listed (comma-separated)")
    args = ap.parse_args()
    rt = Services(Settings())
    rubric = load_dev_rubric()
    outcomes = sanitiser_outcomes(rt.embedder, training_examples(), rubric, rt.settings.guard, folds=args.folds,
                                  patterns=not args.no_patterns)
    classes = [c for _, c in outcomes]
    metrics, _ = safety_metrics(rubric, [core or "" for core, _ in outcomes], [core is None for core, _ in outcomes])
    print(f"data/redteam.csv out of fold ({args.folds} folds, patterns {'off' if args.no_patterns else 'on'}): "
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
    name = "sanitizer_dev" + ("-no-patterns" if args.no_patterns else "")
    (rt.settings.reports_dir / f"{name}.json").write_text(json.dumps(
        {"folds": args.folds, "patterns": not args.no_patterns, "metrics": metrics, "counts": dict(Counter(classes)),
         "rows": [{"prompt": r.prompt, "core": core, "class": c} for r, (core, c) in zip(rubric, outcomes,
                                                                                           strict=True)]}, indent=2))


if __name__ == "__main__":
    main()
