"""Latency of one rewrite through the rewrite graph, cold and warm, with the node split.

    python bench/rewrite_latency.py [--prompts 8] [--n N] [--max-new-tokens T] [--step fused|forward]

Cold: a new process's first rewrite (models loaded, the critic's capability
read from the store or measured). A store that has never seen the model has
the critic probe it over its first few rewrites (a breaker window of
critiques, once per model and store, then remembered): those rewrites are
reported apart as ``probing``, not as warm. Warm: each further rewrite of one
eval prompt with the default settings (n from generation.n unless given);
median and p95 over the prompts, and each node's share read back from the
trace store. ``--step forward`` decodes through the int8 copy's transformers
forward instead of the fused step (agents/llm/decode_step.py), for an A/B on
one machine. Appends the summary to $PROMPTLOOP_HOME/reports/bench_rewrite.jsonl.
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
from promptloop.store.models import TraceEvent
from promptloop.store.shipped import shipped_prompts


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def _group(totals: list[float], steps: list[int]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = defaultdict(list)
    for t, k in zip(totals, steps, strict=True):
        out[k].append(t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8, help="warm rewrites timed (one eval prompt each)")
    ap.add_argument("--n", type=int, default=None, help="candidates per rewrite (default: generation.n)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: generation.max_new_tokens")
    ap.add_argument("--step", choices=("fused", "forward"), default="fused",
                    help="int8 decode steps: the fused step (default) or the copy's transformers forward")
    args = ap.parse_args()
    t_start = time.perf_counter()
    rt = Services(Settings())
    if hasattr(rt.chat_model, "fused_step"):
        rt.chat_model.fused_step = args.step == "fused"
    prompts = shipped_prompts("eval")
    spread = prompts[:: max(1, len(prompts) // (args.prompts + 1))][: args.prompts + 1]
    prompts = spread + [p for p in prompts if p not in spread]  # the rest stand in for probing rewrites
    first = rewrite(prompts[0], services=rt, n=args.n, max_new_tokens=args.max_new_tokens)
    cold = time.perf_counter() - t_start
    per_node: dict[str, list[float]] = defaultdict(list)
    totals, steps, probing = [], [], []
    for p in prompts[1:]:
        if len(totals) == args.prompts:
            break
        pending = rt.critic.probing
        t0 = time.perf_counter()
        r = rewrite(p, services=rt, n=args.n, max_new_tokens=args.max_new_tokens)
        if pending:
            probing.append(round(time.perf_counter() - t0, 2))
            continue
        totals.append(time.perf_counter() - t0)
        steps.append(r.refine_steps)
        with Session(rt.engine) as s:
            for e in s.exec(select(TraceEvent).where(TraceEvent.thread_id == r.trace_id)):
                per_node[e.node].append((e.duration_ms or 0) / 1000)
    summary = {
        "bench": "rewrite_latency", "warm_rewrites": len(totals),
        "n": args.n or rt.settings.generation.n,
        "max_new_tokens": args.max_new_tokens or rt.settings.generation.max_new_tokens,
        "max_refine_steps": rt.settings.critic.max_refine_steps,
        "quantize": getattr(rt.chat_model, "quantize", "served"),
        "step": args.step, "cold_first_rewrite_s": round(cold, 2), "cold_refine_steps": first.refine_steps,
        "probing_rewrites_s": probing,
        "warm_s": {"median": round(statistics.median(totals), 2), "p95": round(percentile(totals, 95), 2),
                   "max": round(max(totals), 2)},
        "refine_steps_mean": round(statistics.mean(steps), 2),
        # the split that decides the median: rewrites whose best candidate passed, and those that refined
        "warm_by_refine_steps": {k: {"rewrites": len(v), "min": round(min(v), 2), "median": round(statistics.median(v), 2),
                                     "max": round(max(v), 2)}
                                 for k, v in sorted(_group(totals, steps).items())},
        "per_node_s": {k: {"calls": len(v), "median": round(statistics.median(v), 2), "max": round(max(v), 2)}
                       for k, v in per_node.items()},
        "critic_llm": {"asked": rt.critic.llm is not None and rt.critic.llm_weight > 0,
                       "breaker_open": rt.critic.breaker_open},
    }
    rt.settings.append_report("bench_rewrite", summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
