"""Latency of the rewrite graph per node and per rewrite, on the embedded defaults.

    python bench/rewrite_latency.py [--prompts 4] [--n 4]

Rewrites eval prompts one run at a time with the default settings, reads the
node timings back from the trace store, and prints mean/max per node and per
rewrite. Appends the summary to $PROMPTLOOP_HOME/reports/bench_rewrite.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

from sqlmodel import Session, select

from promptloop.api import rewrite
from promptloop.config import Settings
from promptloop.services import Services
from promptloop.store.importer import read_prompt_file
from promptloop.store.models import TraceEvent
from promptloop.store.shipped import data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=4)
    args = ap.parse_args()
    rt = Services(Settings())
    prompts = [r.text for r in read_prompt_file(data_dir() / "prompts.csv", max_chars=1000) if r.split == "eval"]
    prompts = prompts[:: max(1, len(prompts) // args.prompts)][: args.prompts]
    rewrite("warm up", services=rt, n=1, max_refine_steps=0, max_new_tokens=4)
    per_node: dict[str, list[float]] = defaultdict(list)
    totals, steps = [], []
    for p in prompts:
        t0 = time.perf_counter()
        r = rewrite(p, services=rt, n=args.n)
        totals.append(time.perf_counter() - t0)
        steps.append(r.refine_steps)
        with Session(rt.engine) as s:
            for e in s.exec(select(TraceEvent).where(TraceEvent.thread_id == r.trace_id)):
                per_node[e.node].append((e.duration_ms or 0) / 1000)
    summary = {
        "bench": "rewrite_latency", "prompts": len(prompts), "n": args.n,
        "max_new_tokens": rt.settings.generation.max_new_tokens, "max_refine_steps": rt.settings.critic.max_refine_steps,
        "per_rewrite_s": {"mean": round(statistics.mean(totals), 2), "max": round(max(totals), 2)},
        "refine_steps_mean": round(statistics.mean(steps), 2),
        "per_node_s": {k: {"calls": len(v), "mean": round(statistics.mean(v), 2), "max": round(max(v), 2)}
                       for k, v in per_node.items()},
        "critic_llm_breaker_open": rt.critic.breaker_open,
    }
    rt.settings.append_report("bench_rewrite", summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
