"""Guard precision / recall on the shipped red-team set and on the held-out file it never saw.

    python bench/guard_eval.py

Prints one row per file (harmful recall, benign pass rate, precision, and
per-category recall) and writes them to $PROMPTLOOP_HOME/reports/guard_eval.json.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict

from promptloop.config import Settings
from promptloop.services import Services
from promptloop.store.shipped import data_dir


def evaluate(guard, file: str) -> dict:
    with (data_dir() / file).open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    verdicts = guard.check_many([r["prompt"] for r in rows])
    per_cat: dict[str, list[bool]] = defaultdict(list)
    tp = fp = fn = tn = 0
    for r, v in zip(rows, verdicts, strict=True):
        harmful = r["harmful"] == "true"
        flagged = not v.safe
        tp += harmful and flagged
        fn += harmful and not flagged
        fp += (not harmful) and flagged
        tn += (not harmful) and not flagged
        if harmful:
            per_cat[r["category"]].append(flagged)
    return {"file": file, "harmful": tp + fn, "benign": fp + tn, "recall": round(tp / (tp + fn), 4),
            "benign_pass": round(tn / (tn + fp), 4), "precision": round(tp / max(1, tp + fp), 4),
            "per_category_recall": {c: round(sum(v) / len(v), 3) for c, v in sorted(per_cat.items())}}


def main() -> None:
    rt = Services(Settings())
    results = [evaluate(rt.guard, f) for f in ("redteam.csv", "redteam_holdout.csv")]
    rt.settings.reports_dir.mkdir(parents=True, exist_ok=True)
    (rt.settings.reports_dir / "guard_eval.json").write_text(json.dumps(results, indent=2))
    for r in results:
        print(f"{r['file']:24s} harmful {r['harmful']:3d}  recall {r['recall']:.1%}  benign {r['benign']:3d}  "
              f"pass {r['benign_pass']:.1%}  precision {r['precision']:.1%}")
        print("   per category:", r["per_category_recall"])


if __name__ == "__main__":
    main()
