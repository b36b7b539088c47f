"""The in-process decode loop against transformers' own ``generate`` and ``generate_batch``, in one run.

    python bench/generation.py [--prompts 16] [--n 4] [--max-new-tokens 64] [--arms own,generate,generate_batch,single]

All arms use one model instance (the embedded rewriter, fp32 on CPU unless the arm says int8), the
rewriter's conversations for the same eval prompts and the same sampling
(temperature 0.8, top-p 0.95, the rewriter's repetition penalty, n samples
per prompt):

- ``own``: ``TransformersChatModel.generate`` (shared-prefix prefill, an
  in-place KV cache, rows leave the batch when they end);
- ``generate``: transformers ``model.generate`` over left-padded batches of
  ``--batch-size`` prompts with ``num_return_sequences=n``;
- ``generate_batch``: transformers' continuous batching
  (``model.generate_batch``, paged KV cache);
- ``own_int8``: the own loop on the weight-only int8 copy (``quantize``,
  the CPU default; agents/llm/quantize.py), decode steps through the fused
  int8 step (agents/llm/decode_step.py);
- ``own_int8_forward``: the same with every decode step through the int8
  copy's transformers forward (what the fused step has to beat);
- ``single``: the own loop called once per prompt (what batching buys).

Rows end at different lengths in each arm, so the comparison is generated
tokens per second; wall seconds are reported too. The own loop is kept only
where it is at least 1.5x the faster library arm (the rule of #21). Writes a
JSON line to ``$PROMPTLOOP_HOME/reports/bench_generation.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from promptloop.agents.llm.transformers_backend import TransformersChatModel
from promptloop.agents.rewriter import Rewriter
from promptloop.config import Settings
from promptloop.services import Services
from promptloop.store.shipped import shipped_prompts


def generation_config(model: TransformersChatModel, args: argparse.Namespace, penalty: float):
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=True, temperature=0.8, top_p=0.95, repetition_penalty=penalty,
                            max_new_tokens=args.max_new_tokens, num_return_sequences=args.n,
                            eos_token_id=model.stop_ids.tolist(), pad_token_id=model.tokenizer.pad_token_id)


def ended_tokens(ids: list[int], stop: set[int]) -> int:
    """Generated tokens up to and without the first end token (what the text holds)."""
    for i, t in enumerate(ids):
        if t in stop:
            return i
    return len(ids)


def arm_own(model: TransformersChatModel, convs, params, tok) -> int:
    outs = model.generate(convs, params)
    return sum(len(tok(text, add_special_tokens=False)["input_ids"]) for row in outs for text in row)


def arm_own_int8(model: TransformersChatModel, convs, params, tok, *, fused: bool = True) -> int:
    model.quantize, model.fused_step = "int8", fused
    try:
        return arm_own(model, convs, params, tok)
    finally:
        model.quantize, model.fused_step = "none", True


def arm_single(model: TransformersChatModel, convs, params, tok) -> int:
    return sum(arm_own(model, [c], params, tok) for c in convs)


@torch.inference_mode()
def arm_generate(model: TransformersChatModel, convs, gen_cfg, batch_size: int) -> int:
    stop = set(model.stop_ids.tolist())
    total = 0
    texts = [model.render(c) for c in convs]
    for start in range(0, len(texts), batch_size):
        enc = model.tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False)
        out = model.model.generate(**enc, generation_config=gen_cfg)
        total += sum(ended_tokens(row.tolist(), stop) for row in out[:, enc["input_ids"].shape[1]:])
    return total


@torch.inference_mode()
def arm_generate_batch(model: TransformersChatModel, convs, gen_cfg) -> int:
    stop = set(model.stop_ids.tolist())
    inputs = [model.tokenizer(model.render(c), add_special_tokens=False)["input_ids"] for c in convs]
    results = model.model.generate_batch(inputs=inputs, generation_config=gen_cfg, progress_bar=False)
    failed = [r.error for r in results.values() if r.error]
    if failed or len(results) != len(inputs) * gen_cfg.num_return_sequences:
        raise RuntimeError(f"generate_batch returned {len(results)} of {len(inputs) * gen_cfg.num_return_sequences} "
                           f"results{'; ' + failed[0] if failed else ''}")
    return sum(ended_tokens(r.generated_tokens, stop) for r in results.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per call (own loop and generate)")
    ap.add_argument("--arms", default="own,own_int8,own_int8_forward,generate,generate_batch")
    args = ap.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    known = {"own", "own_int8", "own_int8_forward", "generate", "generate_batch", "single"}
    if set(arms) - known:
        ap.error(f"unknown arm(s): {sorted(set(arms) - known)}")

    settings = Settings(generation={"batch_size": args.batch_size}, quantize="none")
    rt = Services(settings)
    prompts = shipped_prompts("eval")[: args.prompts]
    model = rt.chat_model
    if not isinstance(model, TransformersChatModel):
        ap.error("this bench compares in-process decoding; the rewriter's backend here is served")
    rewriter: Rewriter = rt.rewriter()
    convs = [rewriter.messages_for(p) for p in prompts]
    params = rt.sampling(n=args.n, max_new_tokens=args.max_new_tokens, temperature=0.8, seed=0)
    gen_cfg = generation_config(model, args, params.repetition_penalty)
    tok = model.tokenizer
    runs = {"own": lambda: arm_own(model, convs, params, tok),
            "own_int8": lambda: arm_own_int8(model, convs, params, tok),
            "own_int8_forward": lambda: arm_own_int8(model, convs, params, tok, fused=False),
            "single": lambda: arm_single(model, convs, params, tok),
            "generate": lambda: arm_generate(model, convs, gen_cfg, args.batch_size),
            "generate_batch": lambda: arm_generate_batch(model, convs, gen_cfg)}

    model.generate(convs[:1], params.model_copy(update={"n": 1, "max_new_tokens": 4}))  # warm-up
    result: dict = {"bench": "generation", "model": settings.base_model, "device": model.device,
                    "dtype": str(model.dtype), "prompts": len(prompts), "n": args.n,
                    "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                    "torch_threads": torch.get_num_threads(), "machine": platform.machine(), "arms": {}}
    for arm in arms:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        try:
            tokens = runs[arm]()
        except Exception as exc:  # a library arm that does not run here is reported, not fatal
            result["arms"][arm] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        dt = time.perf_counter() - t0
        result["arms"][arm] = {"s": round(dt, 2), "tokens": tokens, "tokens_per_s": round(tokens / dt, 1)}
    library = [result["arms"][a]["tokens_per_s"] for a in ("generate", "generate_batch")
               if "tokens_per_s" in result["arms"].get(a, {})]
    if "tokens_per_s" in result["arms"].get("own", {}) and library:
        result["own_vs_best_library"] = round(result["arms"]["own"]["tokens_per_s"] / max(library), 2)
    if all("tokens_per_s" in result["arms"].get(a, {}) for a in ("own_int8", "own_int8_forward")):
        result["fused_step_gain"] = round(result["arms"]["own_int8"]["tokens_per_s"]
                                          / result["arms"]["own_int8_forward"]["tokens_per_s"], 2)
    settings.append_report("bench_generation", result)
    print(json.dumps(result, indent=2))
    print(f"\n{'arm':17} {'s':>8} {'tokens':>7} {'tokens/s':>9}")
    for arm, r in result["arms"].items():
        if "error" in r:
            print(f"{arm:17} unavailable: {r['error']}")
        else:
            print(f"{arm:17} {r['s']:8.1f} {r['tokens']:7d} {r['tokens_per_s']:9.1f}")
    if "own_vs_best_library" in result:
        print(f"own loop vs the faster library arm: {result['own_vs_best_library']:.2f}x tokens/s")
    if "fused_step_gain" in result:
        print(f"fused int8 step vs the int8 copy's transformers forward: {result['fused_step_gain']:.2f}x tokens/s")


if __name__ == "__main__":
    main()
