"""Which decoding controls keep the embedded rewriter out of loops, measured on the *train* split.

    python bench/sampling_controls.py [--prompts 16] [--n 4]

Two decodings of the base rewriter under each arm of controls: collection's
(n candidates per prompt at the generation settings' temperature and top-p)
and evaluation's (one greedy rewrite, what the loop's gate measures), on evenly spaced train-split prompts of the shipped set: the eval
split and VBench, which the promotion gate measures on, are never used to
choose these defaults. Reports per arm the repeated-trigram rate, distinct-2,
the shares of cut-off and degenerate candidates (the rule pair selection
uses), words, and intent cosine (prompt vs rewrite, MiniLM). Writes JSON lines
to ``$PROMPTLOOP_HOME/reports/bench_sampling_controls.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from promptloop.agents.llm.base import SamplingParams
from promptloop.agents.text_checks import degeneracy, distinct_n, is_cut_off, repetition_rate, words
from promptloop.config import SamplingControls, Settings
from promptloop.evaluation.benches import spaced
from promptloop.services import Services
from promptloop.store.importer import read_prompt_file
from promptloop.store.shipped import data_dir

ARMS: dict[str, dict] = {
    "none": {},
    "rp1.1": {"repetition_penalty": 1.1},
    "rp1.2": {"repetition_penalty": 1.2},
    "ngram4": {"no_repeat_ngram_size": 4},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated arm names")
    args = ap.parse_args()

    settings = Settings()
    rt = Services(settings)
    rows = [r for r in read_prompt_file(data_dir() / "prompts.csv", max_chars=1000) if r.split == "train"]
    prompts = [rows[i].text for i in spaced(len(rows), args.prompts)]
    g, lo, hi = settings.generation, settings.rewrite.target_words_min, settings.rewrite.target_words_max
    out = settings.reports_dir / "bench_sampling_controls.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{'arm':14} {'mode':8} {'repeat':>7} {'dist-2':>7} {'cut':>6} {'degen':>6} {'words':>6} {'intent':>7} {'s':>6}")
    modes = {"sampled": {"n": args.n, "temperature": g.temperature, "top_p": g.top_p},
             "greedy": {"n": 1, "temperature": 0.0}}
    for arm, mode in ((a, m) for a in args.arms.split(",") for m in modes):
        params = SamplingParams.of(SamplingControls(**ARMS[arm]), max_new_tokens=g.max_new_tokens, seed=settings.seed,
                                   **modes[mode])
        t0 = time.perf_counter()
        results = rt.rewriter().rewrite(prompts, params)
        wall = time.perf_counter() - t0
        cands = [(p, c) for p, r in zip(prompts, results, strict=True) for c in r.candidates]
        intent = rt.embedder.pairwise([p for p, _ in cands], [c for _, c in cands])
        row = {
            "arm": arm, "mode": mode, "controls": ARMS[arm], "prompts": len(prompts), "candidates": len(cands),
            "split": "train", "repetition": float(np.mean([repetition_rate(c) for _, c in cands])),
            "distinct_2": float(np.mean([distinct_n(c, 2) for _, c in cands])),
            "cut_off": float(np.mean([is_cut_off(c) for _, c in cands])),
            "degenerate": float(np.mean([bool(degeneracy(c, max_words=hi)) for _, c in cands])),
            "words": float(np.mean([len(words(c)) for _, c in cands])),
            "intent_cosine": float(np.mean(intent)),
            "wall_s": round(wall, 1), "machine": platform.processor() or platform.machine(),
            "target_words": [lo, hi],
        }
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{arm:14} {mode:8} {row['repetition']:7.3f} {row['distinct_2']:7.3f} {row['cut_off']:6.2f} "
              f"{row['degenerate']:6.2f} {row['words']:6.1f} {row['intent_cosine']:7.3f} {wall:6.1f}", flush=True)


if __name__ == "__main__":
    main()
