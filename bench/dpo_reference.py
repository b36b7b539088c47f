"""DPO's reference in the second DPO round: the parent version or the anchor SFT version, in one run.

    python bench/dpo_reference.py [--limit 24] [--eval-limit 32] [--sft-steps 12] [--dpo-steps 6]

On a fresh store (``$PROMPTLOOP_HOME``): SFT on round 0 (train split), DPO
round 1 from it, pairs of round 2 sampled by the round-1 version, then two
round-2 DPO versions from the same parent and data, one against the parent
(r1-dpo) and one against the anchor (r0-sft). Both are judged against their
parent by the promotion gate on the eval split (never used for training or
for choosing anything else), with every guardrail metric. Writes a JSON line
to ``$PROMPTLOOP_HOME/reports/bench_dpo_reference.jsonl``.
"""

from __future__ import annotations

import argparse
import time

from promptloop.config import Settings
from promptloop.evaluation import gate
from promptloop.evaluation.runner import EvalConfig, load_items
from promptloop.learners.config import load_config
from promptloop.services import Services
from promptloop.store.shipped import import_shipped

METRICS = ("judge_total", "intent_recall_at_1", "repetition", "distinct_2", "fluency", "words")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=24, help="train-split prompts collected per round")
    ap.add_argument("--eval-limit", type=int, default=32)
    ap.add_argument("--sft-steps", type=int, default=12)
    ap.add_argument("--dpo-steps", type=int, default=6)
    args = ap.parse_args()
    settings = Settings()
    rt = Services(settings)
    import_shipped(rt.engine)
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    say("collect sft r0")
    rt.collect("sft", limit=args.limit, round_index=0)
    rt.train("sft", load_config("sft", round_index=0, parent="base", name="r0-sft", max_steps=args.sft_steps))
    say("collect pairs r1 (r0-sft)")
    rt.collect("pairs", model_version="r0-sft", limit=args.limit, round_index=1)
    rt.train("dpo", load_config("dpo", round_index=1, parent="r0-sft", name="r1-dpo", max_steps=args.dpo_steps))
    say("collect pairs r2 (r1-dpo)")
    rt.collect("pairs", model_version="r1-dpo", limit=args.limit, round_index=2)
    for ref in ("parent", "anchor"):
        say(f"dpo r2, reference {ref}")
        rt.train("dpo", load_config("dpo", round_index=2, parent="r1-dpo", name=f"r2-{ref}", reference=ref,
                                         max_steps=args.dpo_steps))
    say("evaluate")
    report = rt.evaluate(["r1-dpo", "r2-parent", "r2-anchor"],
                         EvalConfig(bench="eval", limit=args.eval_limit, redteam_limit=0))
    res = {r.system: r for r in report.results}
    p = settings.promotion
    row = {"limit": args.limit, "eval_limit": args.eval_limit, "sft_steps": args.sft_steps,
           "dpo_steps": args.dpo_steps, "split": "eval", "wall_s": round(time.perf_counter() - t0), "arms": {}}
    print(f"{'version':10} " + " ".join(f"{m:>18}" for m in METRICS) + "  decision vs r1-dpo")
    for name in ("r1-dpo", "r2-parent", "r2-anchor"):
        m = res[name].metrics
        line = f"{name:10} " + " ".join(f"{m.get(k) if m.get(k) is not None else '-':>18}" for k in METRICS)
        arm = {k: m.get(k) for k in METRICS}
        if name != "r1-dpo":
            items = {k: load_items(res[k].outputs_path) for k in ("r1-dpo", name)}
            d = gate.decide(p.primary_metric, [r[p.primary_metric] for r in items["r1-dpo"]],
                            [r[p.primary_metric] for r in items[name]], res["r1-dpo"].metrics, m, p.guardrails,
                            confidence=p.confidence, resamples=p.resamples)
            arm["decision"] = d.to_dict()
            line += f"  {d.rule}: gain {d.primary.get('gain', 0):+.4f} {d.primary.get('interval')}"
        row["arms"][name] = arm
        print(line, flush=True)
    settings.append_report("bench_dpo_reference", row)


if __name__ == "__main__":
    main()
