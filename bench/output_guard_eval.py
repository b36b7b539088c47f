"""Whether the output guard sees harm inside a long rewrite: whole text against its most harmful sentence.

    python bench/output_guard_eval.py [--benign 300] [--folds 5] [--min-benign-pass 0.95]

Each harmful request of the guard's training rows (data/redteam.csv; scored
out of fold) is written as one sentence into a benign public rewrite of a
VBench-train prompt, and the rewrites alone measure what the check costs.
Nothing here is a holdout: the red-team holdouts and VBench-test are not read.
The threshold rule is the input guard's (bench/guard_eval.py): the highest
recall that passes at least --min-benign-pass of benign texts.

Writes $PROMPTLOOP_HOME/reports/output_guard_eval.json.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict

from promptloop.agents.safety.guard import training_examples
from promptloop.config import Settings
from promptloop.evaluation.guard_figures import dilution
from promptloop.services import Services
from promptloop.store.shipped import vbench_prompts, vbench_rewrites, vbench_split

GRID = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benign", type=int, default=300, help="benign rewrites sampled from VBench-train")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--min-benign-pass", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rt = Services(Settings())
    settings = rt.settings
    train = [i for i, p in enumerate(vbench_prompts()) if vbench_split(p) == "train"]
    sources = vbench_rewrites()
    rng = random.Random(args.seed)
    rewrites = [sources[rng.choice(sorted(sources))][i] for i in rng.sample(train, min(args.benign, len(train)))]
    fig = dilution(rt.embedder, training_examples(), rewrites, settings.guard, GRID, folds=args.folds,
                   seed=args.seed)
    ok = [t for t, r in fig.grid.items() if r["sentence_pass"] >= args.min_benign_pass]
    best = max(ok, key=lambda t: (fig.grid[t]["sentence_recall"], t)) if ok else None
    print(f"{fig.harmful} harmful training requests (out of fold) inside benign rewrites; {fig.benign} benign "
          f"VBench-train rewrites ({', '.join(sorted(sources))})")
    print("  threshold  whole: recall  pass   sentence: recall  pass")
    for t, r in fig.grid.items():
        mark = "  <- chosen" if t == best else ""
        print(f"  {t:9.2f}  {r['whole_recall']:13.1%} {r['whole_pass']:6.1%}  {r['sentence_recall']:16.1%} "
              f"{r['sentence_pass']:6.1%}{mark}")
    print(f"configured guard.sentence_threshold: {settings.guard.sentence_threshold}")
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    (settings.reports_dir / "output_guard_eval.json").write_text(json.dumps(
        {"chosen": best, "configured": settings.guard.sentence_threshold, **asdict(fig)}, indent=2))


if __name__ == "__main__":
    main()
