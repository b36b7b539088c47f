"""collect-pairs throughput: 32 train prompts x 4 candidates, batched vs one prompt at a time, one run.

    python bench/collect_pairs.py [--prompts 32] [--n 4] [--max-new-tokens 64]

Both arms run the real collect-pairs graph (guard, rewriter, critic, judge,
pair selection, persistence) on the embedded default with the same settings;
the batched arm puts all prompts in one checkpointed graph run, fanned out
with ``Send`` into parts of ``collect.part_size`` prompts (at most
``collect.max_concurrency`` in flight; model calls batched across a part's
prompts), the other runs one graph per prompt. Each arm writes to its own
round so neither reuses the other's rows. The LLM critic is off in both arms
(SmolLM2-135M never returns valid critique JSON, and the circuit breaker would
otherwise favour whichever arm runs second). Results are appended to
$PROMPTLOOP_HOME/reports/bench_collect_pairs.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time

from promptloop.config import Settings
from promptloop.graphs.collection import CollectContext, run_collection
from promptloop.services import Services
from promptloop.store.repository import ensure_round, select_prompts
from promptloop.store.shipped import import_shipped
from promptloop.store.versions import ensure_version


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    settings = Settings(critic={"use_llm": False}, generation={"batch_size": args.prompts})
    rt = Services(settings)
    import_shipped(rt.engine)
    prompts = select_prompts(rt.engine, "train", args.prompts)
    version = ensure_version(rt.engine, "base", settings.base_model)
    graph = rt.collect_graph("pairs")
    stamp = int(time.time())

    def arm(batch: int, round_index: int) -> tuple[float, dict]:
        base = vars(rt.rewrite_context(n=args.n, max_refine_steps=0, max_new_tokens=args.max_new_tokens))
        ctx = CollectContext(**base, round_id=ensure_round(rt.engine, round_index), model_version_id=version,
                             part_size=settings.collect.part_size)
        t0 = time.perf_counter()
        rep = run_collection(graph, "pairs", prompts, ctx, round_index=round_index, batch_size=batch,
                             key={"bench": stamp, "batch": batch}, max_concurrency=settings.collect.max_concurrency)
        return time.perf_counter() - t0, rep.stored

    rt.chat_model.generate([rt.rewriter().messages_for("warm up")], rt.sampling(n=1, max_new_tokens=2))
    rt.guard.check("warm up")
    t_batched, stored_b = arm(len(prompts), 1000 + stamp % 1000)
    t_single, stored_s = arm(1, 2000 + stamp % 1000)
    result = {"bench": "collect_pairs", "prompts": len(prompts), "n": args.n, "max_new_tokens": args.max_new_tokens,
              "part_size": settings.collect.part_size, "max_concurrency": settings.collect.max_concurrency,
              "batched_s": round(t_batched, 1), "one_at_a_time_s": round(t_single, 1),
              "speedup": round(t_single / t_batched, 2), "batched_rows": stored_b, "one_at_a_time_rows": stored_s}
    settings.append_report("bench_collect_pairs", result)
    print(json.dumps(result, indent=2))
    print(f"\nbatched {t_batched:.1f}s vs one prompt at a time {t_single:.1f}s: {t_single / t_batched:.2f}x")


if __name__ == "__main__":
    main()
