"""FLOPs and seconds per LoRA training step (SFT, DPO) against this machine's own fp32 matmul rate, in one run.

    python bench/train_step.py [--arms sft,dpo,dpo-precompute] [--steps 5] [--batch-size 4] [--passes 2]

Every arm trains the embedded rewriter through promptloop's own learners
(``train_sft`` / ``train_dpo``: TRL trainers, LoRA r16 on every projection) on
the same shipped rows, so it runs on a fresh home with nothing collected:
SFT rows are the rewriter's instruction + GPT-4o's public rewrite of a
vbench-train prompt; DPO pairs put GPT-4o's rewrite (chosen) against
Wan2.1's (rejected) for the same prompt. Arms:

- ``sft``: TRL SFTTrainer, completion-only loss;
- ``dpo``: TRL DPOTrainer with the reference forward inside every step;
- ``dpo-precompute``: the reference log-probs of every pair once, before
  the first step (``precompute_ref_log_probs``; the learner's ``auto``
  default does this when a run passes over its pairs more than once).

Each arm trains ``--steps`` steps over ``steps x batch / passes`` rows, so
with ``--passes 2`` (the recipes' two epochs) every row is seen twice and the
precomputed reference is used twice; ``wall_s`` includes that precompute.

FLOPs are counted, not derived from a formula: one step (the second) of each
arm runs under ``torch.utils.flop_counter.FlopCounterMode``, which counts
every matmul, convolution and attention kernel the step dispatches, forward
and backward. torch has no rule for the CPU flash-attention kernels
(``_scaled_dot_product_flash_attention_for_cpu`` and its backward), which
the other sdpa kernels' rules fit (same leading arguments); they are given
those rules here, halved where the kernel runs causal (it skips the masked
half; with a padding mask it computes every block). That step is not timed; the first step is
warm-up and not timed either. The matmul rate is a 2048x2048 fp32 matmul at
the same thread count, measured before and after the arms; the ratio is
achieved FLOP/s over the better of the two. Writes one JSON line per arm to
``$PROMPTLOOP_HOME/reports/bench_train_step.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from promptloop.config import Settings
from promptloop.learners.config import load_config
from promptloop.learners.data import TrainingData
from promptloop.services import Services
from promptloop.store.teachers import shipped_teacher_rows


def matmul_flops(n: int = 2048, repeats: int = 8, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of an n x n matmul on this machine (CPU: at the process's thread count), best of ``repeats``."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def cpu_attention_rules() -> dict:
    """FLOP rules for the CPU flash-attention kernels, which torch's counter does not know (it would count 0)."""
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query, key, value, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value) // (2 if is_causal else 1)

    def backward(grad_out, query, key, value, out, logsumexp, dropout_p=0.0, is_causal=False, *args,
                 out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value) // (2 if is_causal else 1)

    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


class StepClock(TrainerCallback):
    """Wall time of every optimizer step; the FLOPs of step ``count_step`` (that one is not timed)."""

    def __init__(self, count_step: int = 2) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        self.count_step = count_step
        self.counter = FlopCounterMode(display=False, custom_mapping=cpu_attention_rules())
        self.times: list[float] = []
        self.flops = 0
        self.attention_flops = 0
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.count_step:
            self.counter.__enter__()
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.perf_counter() - self._t0
        if state.global_step == self.count_step:
            self.counter.__exit__(None, None, None)
            self.flops = self.counter.get_total_flops()
            self.attention_flops = sum(n for op, n in self.counter.get_flop_counts()["Global"].items()
                                       if "attention" in str(op))
        elif state.global_step > 1:
            self.times.append(dt)


def shipped_rows(kind: str, count: int, build_messages) -> TrainingData:
    gpt4o = shipped_teacher_rows("gpt4o")[:count]
    if kind == "sft":
        rows = [{"messages": [*build_messages(r.prompt), {"role": "assistant", "content": r.rewrite}]}
                for r in gpt4o]
    else:
        wan = {r.prompt: r.rewrite for r in shipped_teacher_rows("wan21_qwen25_3b")}
        rows = [{"prompt": build_messages(r.prompt), "chosen": [{"role": "assistant", "content": r.rewrite}],
                 "rejected": [{"role": "assistant", "content": wan[r.prompt]}]} for r in gpt4o if r.prompt in wan]
    return TrainingData(rows=rows, round_index=0, round_ids=[], provenance={"bench": "shipped vbench-train"})


def run_arm(arm: str, services: Services, args: argparse.Namespace) -> dict:
    algorithm = "sft" if arm == "sft" else "dpo"
    overrides = {"max_steps": args.steps, "per_device_train_batch_size": args.batch_size,
                 "max_length": args.max_length, "logging_steps": 1, "save_steps": 10_000, "parent": "base",
                 "name": f"bench-{arm}"}
    if algorithm == "dpo":
        overrides["precompute_ref_log_probs"] = arm == "dpo-precompute"
    if args.attn:
        overrides["attn_implementation"] = args.attn
    cfg = load_config(algorithm, **overrides)
    count = max(1, round(args.steps * args.batch_size / args.passes))
    data = shipped_rows(algorithm, count, services.rewriter(with_model=False).messages_for)
    clock = StepClock()
    t0 = time.perf_counter()
    res = services.train(algorithm, cfg, data=data, callbacks=[clock])
    wall = time.perf_counter() - t0
    s_per_step = statistics.median(clock.times) if clock.times else float("nan")
    return {"arm": arm, "steps": res.metrics["global_step"], "batch_size": args.batch_size, "rows": count,
            "max_length": args.max_length, "attn_implementation": args.attn or "default",
            "gflop_per_step": round(clock.flops / 1e9, 1), "attention_gflop_per_step": round(clock.attention_flops / 1e9, 1),
            "s_per_step": round(s_per_step, 2), "achieved_gflops": round(clock.flops / s_per_step / 1e9, 1),
            "timed_steps": len(clock.times), "wall_s": round(wall, 1), "last_loss": res.metrics.get("last_loss")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default="sft,dpo,dpo-precompute")
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per arm (>= 4: warm-up, counted, timed)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--attn", choices=["eager", "sdpa"], default=None,
                    help="attention kernel for training (ModelConfig.attn_implementation; default: transformers')")
    ap.add_argument("--passes", type=float, default=2.0, help="times each row is seen (rows = steps x batch / passes)")
    args = ap.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = set(arms) - {"sft", "dpo", "dpo-precompute"}
    if unknown or args.steps < 4 or args.passes <= 0:
        ap.error(f"unknown arm(s) {sorted(unknown)}" if unknown else
                 "--steps must be at least 4" if args.steps < 4 else "--passes must be positive")
    home = Settings().home
    with tempfile.TemporaryDirectory(prefix="pl-bench-") as tmp:
        # a throw-away store and adapters folder; the prepared models of the real home are reused
        (Path(tmp) / "models").symlink_to(home / "models", target_is_directory=True)
        services = Services(Settings(home=tmp))
        before = matmul_flops()
        rows = [run_arm(arm, services, args) for arm in arms]
        peak = max(before, matmul_flops())
    for row in rows:
        row.update({"matmul_gflops": round(peak / 1e9, 1), "threads": torch.get_num_threads(),
                    "ratio": round(row["achieved_gflops"] * 1e9 / peak, 3), "device": "cpu"})
        # the same step without its attention FLOPs (what this bench counted before it had rules for them)
        row["ratio_without_attention"] = round(row["ratio"] * (1 - row["attention_gflop_per_step"]
                                                               / row["gflop_per_step"]), 3)
        Settings().append_report("bench_train_step", row)
        print(json.dumps(row))
    print(f"\nfp32 matmul {peak / 1e9:.1f} GFLOP/s, {torch.get_num_threads()} threads")
    print(f"{'arm':16} {'GFLOP/step':>11} {'attention':>9} {'s/step':>7} {'GFLOP/s':>8} {'of matmul':>9} "
          f"{'w/o attn':>8} {'wall s':>7}")
    for r in rows:
        print(f"{r['arm']:16} {r['gflop_per_step']:11.1f} {r['attention_gflop_per_step']:9.1f} {r['s_per_step']:7.2f} "
              f"{r['achieved_gflops']:8.1f} {r['ratio']:9.1%} {r['ratio_without_attention']:8.1%} {r['wall_s']:7.1f}")


if __name__ == "__main__":
    main()
