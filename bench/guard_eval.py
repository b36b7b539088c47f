"""The guard's flag threshold by cross-validation on its training data, then its figures on the holdout.

    python bench/guard_eval.py [--folds 5] [--min-benign-pass 0.95] [--file redteam_holdout_b.csv]

1. Out-of-fold verdicts on the guard's training rows (data/redteam.csv and the
   train split of the user prompts; the classifier refitted without each fold)
   choose ``guard.flag_threshold``: the highest recall that passes at least
   ``--min-benign-pass`` of benign rows.
2. With the configured threshold, recall / benign pass / precision per
   category and the confusion table on a red-team holdout (data/redteam_holdout.csv
   by default, or redteam_holdout_b.csv), which trains and tunes nothing.

Writes $PROMPTLOOP_HOME/reports/guard_eval[-<holdout>].json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from promptloop.agents.safety.guard import SAFE, training_examples
from promptloop.config import Settings
from promptloop.evaluation.guard_figures import ALLOWED, cross_validated_threshold, figures
from promptloop.evaluation.safety import HOLDOUT, HOLDOUTS, load_rubric
from promptloop.services import Services

GRID = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--min-benign-pass", type=float, default=0.95)
    ap.add_argument("--file", choices=HOLDOUTS, default=HOLDOUT, help="the red-team holdout of step 2")
    args = ap.parse_args()
    rt = Services(Settings())
    best, cv = cross_validated_threshold(rt.embedder, training_examples(), rt.settings.guard, GRID,
                                         folds=args.folds, min_benign_pass=args.min_benign_pass)
    configured = rt.settings.guard.flag_threshold
    print(f"classifier layer cross-validated on the training rows ({args.folds} folds): threshold {best} "
          f"(configured {configured})")
    print("  threshold  recall  benign pass")
    for t, (rec, bp) in cv.items():
        print(f"  {t:9.2f}  {rec:6.1%}  {bp:10.1%}" + ("  <- chosen" if t == best else ""))
    rows = load_rubric(args.file)
    labels = [r.category if r.harmful else SAFE for r in rows]
    fig = figures(labels, rt.guard.check_many([r.prompt for r in rows]))
    print(f"\n{args.file} ({fig.harmful} harmful, {fig.benign} benign): recall {fig.recall:.1%}, benign pass "
          f"{fig.benign_pass:.1%}, precision {fig.precision:.1%}")
    print("  category          n  recall  precision")
    for cat, f in fig.per_category.items():
        print(f"  {cat:16s} {int(f['n']):2d}  {f['recall']:6.1%}  {f['precision']:9.1%}")
    cols = [*sorted({c for row in fig.confusion.values() for c in row} - {ALLOWED}), ALLOWED]
    print("\nconfusion (rows: true, columns: strongest flagged category)")
    print(" " * 17 + " ".join(f"{c[:8]:>8s}" for c in cols))
    for true, row in fig.confusion.items():
        print(f"  {true:15s}" + " ".join(f"{row.get(c, 0):8d}" for c in cols))
    rt.settings.reports_dir.mkdir(parents=True, exist_ok=True)
    out = {"cv": {"folds": args.folds, "chosen": best, "configured": configured,
                  "grid": {str(t): {"recall": r, "benign_pass": b} for t, (r, b) in cv.items()}},
           "holdout": asdict(fig)}
    name = "guard_eval" + ("" if args.file == HOLDOUT else "-" + args.file.removesuffix(".csv"))
    (rt.settings.reports_dir / f"{name}.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
