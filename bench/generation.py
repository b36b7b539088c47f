"""Batched vs one-at-a-time generation on the embedded rewriter model, in one run.

    python bench/generation.py [--prompts 16] [--n 4] [--max-new-tokens 64]

Both arms use the same model instance, conversations and sampling settings;
the batched arm sends all conversations in one ChatModel.generate call, the
other calls it once per conversation. Writes a JSON line to
``$PROMPTLOOP_HOME/reports/bench_generation.jsonl`` and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from promptloop.agents.rewriter import Rewriter
from promptloop.config import Settings
from promptloop.services import Services
from promptloop.store.importer import read_prompt_file
from promptloop.store.shipped import data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    settings = Settings(generation={"batch_size": args.batch_size})
    rt = Services(settings)
    rows = [r for r in read_prompt_file(data_dir() / "prompts.csv", max_chars=1000) if r.split == "eval"]
    prompts = [r.text for r in rows[: args.prompts]]
    model = rt.chat_model
    rewriter: Rewriter = rt.rewriter()
    convs = [rewriter.messages_for(p) for p in prompts]
    params = rt.sampling(n=args.n, max_new_tokens=args.max_new_tokens, temperature=0.8, seed=0)

    model.generate(convs[:1], params.model_copy(update={"n": 1, "max_new_tokens": 4}))  # warm-up
    t0 = time.perf_counter()
    batched = model.generate(convs, params)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [model.generate([c], params)[0] for c in convs]
    t_single = time.perf_counter() - t0

    result = {
        "bench": "generation", "model": settings.base_model, "device": model.device, "dtype": str(model.dtype),
        "prompts": len(prompts), "n": args.n, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
        "batched_s": round(t_batched, 2), "one_at_a_time_s": round(t_single, 2),
        "speedup": round(t_single / t_batched, 2),
        "completions": sum(len(b) for b in batched), "completions_single": sum(len(s) for s in single),
        "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
    }
    settings.append_report("bench_generation", result)
    print(json.dumps(result, indent=2))
    print(f"\nbatched {t_batched:.1f}s vs one-at-a-time {t_single:.1f}s: {t_single / t_batched:.2f}x")


if __name__ == "__main__":
    main()
