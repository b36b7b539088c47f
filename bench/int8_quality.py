"""What int8 decoding costs in quality: the int8 rewriter against the fp32 one on train-split prompts.

    python bench/int8_quality.py [--prompts 24] [--max-new-tokens 160] [--adapter VERSION]

For each prompt the fp32 rewriter writes a greedy rewrite; both models then
score that same text token by token (teacher forcing), giving the mean
per-token KL(fp32 || int8) and how often their top token agrees. The int8
model's own greedy rewrite is compared too: exact matches, and the
all-MiniLM cosine between the two rewrites. Prompts come from the train
split (the eval split is never used to decide a default). Writes a JSON line
to ``$PROMPTLOOP_HOME/reports/bench_int8_quality.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from promptloop.agents.llm.transformers_backend import TransformersChatModel
from promptloop.config import Settings
from promptloop.services import Services
from promptloop.store.shipped import shipped_prompts


@torch.inference_mode()
def token_log_probs(model: torch.nn.Module, ids: list[int], start: int) -> torch.Tensor:
    """Log-probabilities over the vocabulary at each position from ``start`` (the rewrite's tokens)."""
    logits = model(input_ids=torch.tensor([ids])).logits[0, start - 1:-1].float()
    return torch.log_softmax(logits, dim=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--adapter", default=None, help="a registered rewriter version (default: the base model)")
    args = ap.parse_args()
    settings = Settings(quantize="none")
    rt = Services(settings)
    model = rt.chat_model
    if not isinstance(model, TransformersChatModel):
        ap.error("this bench compares in-process decoding; the rewriter's backend here is served")
    adapter = rt.resolve_model_version(args.adapter) if args.adapter else None
    rewriter = rt.rewriter(adapter)
    prompts = shipped_prompts("train")[: args.prompts]
    convs = [rewriter.messages_for(p) for p in prompts]
    params = rt.sampling(n=1, max_new_tokens=args.max_new_tokens, temperature=0.0, seed=0)

    def at_defaults() -> dict:
        """The rewriter at its default sampling (n, temperature): words and the critic's pass share."""
        rows = model.generate(convs, rt.sampling(max_new_tokens=args.max_new_tokens, seed=1), adapter=adapter)
        pairs = [(p, c) for p, row in zip(prompts, rows, strict=True) for c in row]
        critiques = rt.deterministic_critic.critique_many(pairs)
        thresholds = rt.rewrite_context().thresholds
        return {"candidates": len(pairs), "words_mean": round(statistics.mean(len(c.split()) for _, c in pairs), 1),
                "critic_pass": round(sum(c.passes(thresholds) for c in critiques) / len(pairs), 3)}

    t0 = time.perf_counter()
    fp32 = [row[0] for row in model.generate(convs, params, adapter=adapter)]
    t_fp32 = time.perf_counter() - t0
    sampled_fp32 = at_defaults()
    model.quantize = "int8"
    t0 = time.perf_counter()
    int8 = [row[0] for row in model.generate(convs, params, adapter=adapter)]
    t_int8 = time.perf_counter() - t0
    sampled_int8 = at_defaults()
    model.quantize = "none"
    # the yardstick: how far one fp32 sample at the rewriter's default temperature lands from fp32's greedy text
    sampled = [row[0] for row in model.generate(convs, rt.sampling(n=1, max_new_tokens=args.max_new_tokens, seed=0),
                                                adapter=adapter)]

    quantized = model._int8[adapter]  # the copy the int8 generations above decoded on
    with model._decoding(adapter) as full:
        kls, agree, tokens = [], 0, 0
        for conv, text in zip(convs, fp32, strict=True):
            prompt_ids = model.tokenizer(model.render(conv), add_special_tokens=False)["input_ids"]
            ids = prompt_ids + model.tokenizer(text, add_special_tokens=False)["input_ids"]
            p = token_log_probs(full, ids, len(prompt_ids))
            q = token_log_probs(quantized, ids, len(prompt_ids))
            kls.append(torch.sum(p.exp() * (p - q), dim=-1).mean().item())
            agree += int((p.argmax(-1) == q.argmax(-1)).sum())
            tokens += p.shape[0]
    cos = rt.embedder.similarity(fp32, int8).diagonal()
    sample_cos = rt.embedder.similarity(fp32, sampled).diagonal()
    words = [len(t.split()) for t in fp32], [len(t.split()) for t in int8]
    result = {
        "bench": "int8_quality", "model": settings.base_model, "adapter": adapter, "split": "train",
        "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "kl_per_token": {"mean": round(statistics.mean(kls), 4), "max": round(max(kls), 4)},
        "top1_agreement": round(agree / tokens, 4), "tokens_scored": tokens,
        "greedy_exact_match": round(sum(a == b for a, b in zip(fp32, int8, strict=True)) / len(prompts), 3),
        "greedy_cosine": {"mean": round(float(cos.mean()), 3), "min": round(float(cos.min()), 3)},
        "fp32_sample_cosine": {"mean": round(float(sample_cos.mean()), 3), "min": round(float(sample_cos.min()), 3),
                               "temperature": rt.settings.generation.temperature},
        "words_mean": {"fp32": round(statistics.mean(words[0]), 1), "int8": round(statistics.mean(words[1]), 1)},
        "greedy_s": {"fp32": round(t_fp32, 1), "int8": round(t_int8, 1)},
        "sampled": {"fp32": sampled_fp32, "int8": sampled_int8},
    }
    settings.append_report("bench_int8_quality", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
