"""Seconds per LoRA training step on the store's data (SFT or DPO), for tuning learners on this machine.

    PROMPTLOOP_HOME=... python bench/train_step.py dpo --round 1 --steps 3 [--batch-size 4] [--max-length 512]

Trains ``--steps`` steps from the champion into a throw-away version name
(``bench-<algo>-<time>``) and prints wall seconds per step; appended to
$PROMPTLOOP_HOME/reports/bench_train_step.jsonl.
"""

from __future__ import annotations

import argparse
import time

from promptloop.config import Settings
from promptloop.learners.config import load_config
from promptloop.services import Services


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("algorithm", choices=["sft", "dpo"])
    ap.add_argument("--round", type=int, default=None)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args()
    rt = Services(Settings())
    from promptloop.learners.dpo import train_dpo
    from promptloop.learners.sft import train_sft

    cfg = load_config(args.algorithm, round_index=args.round, max_steps=args.steps, logging_steps=1,
                      per_device_train_batch_size=args.batch_size, max_length=args.max_length,
                      name=f"bench-{args.algorithm}-{int(time.time())}")
    res = (train_sft if args.algorithm == "sft" else train_dpo)(rt, cfg)
    m = res.version.metrics
    row = {"algorithm": args.algorithm, "steps": m["global_step"], "batch_size": args.batch_size,
           "max_length": args.max_length, "train_runtime_s": m.get("train_runtime_s"),
           "s_per_step": round(m["train_runtime_s"] / max(1, m["global_step"]), 2), "device": m["device"]}
    print(row)
    rt.settings.append_report("bench_train_step", row)


if __name__ == "__main__":
    main()
