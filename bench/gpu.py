"""The GPU figures in one command: vLLM rewriter throughput, SFT/DPO step time and MFU, video render seconds.

    python bench/gpu.py [--large-model PATH] [--video-model PATH] [--steps 6] [--out FILE]

Each section runs only where what it needs is present, and says why it was
skipped otherwise (exit 0 either way, so one command fits any machine):

- ``vllm``: tokens/s of the embedded rewriter under vLLM (promptloop's
  in-process ``VLLMChatModel``), n=4 samples of each of 64 eval prompts'
  rewriter conversations, 160 new tokens; needs CUDA and ``vllm``;
- ``train``: promptloop's own SFT and DPO learners (bench/train_step.py's arms:
  TRL trainers, LoRA, bf16 base weights) for SmolLM2-135M, and for
  ``--large-model`` (a local 1-8B folder) when given; FLOPs counted with
  torch's FlopCounterMode, MFU against this GPU's measured bf16 matmul rate
  (8192^3) and against ``--peak-tflops`` when given (a datasheet figure);
- ``video``: seconds per video of ``--video-model`` (e.g. a local
  CogVideoX-2B folder) at its default frames and steps, through promptloop's
  renderer; the first render (compile and load) is reported apart.

Prints a table per section and writes everything as one JSON object to
``--out`` (default ``$PROMPTLOOP_HOME/reports/bench_gpu.json``), with the GPU's
name, so the numbers in the README can say what they ran on.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from promptloop.config import Settings


def gpu_info() -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"cuda": False}
    p = torch.cuda.get_device_properties(0)
    return {"cuda": True, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(), "torch": torch.__version__, "cuda_version": torch.version.cuda}


def eval_prompts(limit: int) -> list[str]:
    """``limit`` eval-split prompts, repeating the shipped ones when more are asked for."""
    from promptloop.store.shipped import shipped_prompts

    rows = shipped_prompts("eval")
    return (rows * (limit // max(1, len(rows)) + 1))[:limit]


def bench_vllm(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return {"skipped": "vllm is not installed (pip install 'promptloop[vllm]')"}
    from promptloop.services import Services

    services = Services(Settings(home=settings.home, base_model=settings.base_model,
                                 backends={"rewriter": {"kind": "vllm"}}))
    t0 = time.perf_counter()
    rewriter = services.rewriter()  # the rewriter on vLLM, as `backends.rewriter.kind = "vllm"` builds it
    model = rewriter.model
    load_s = time.perf_counter() - t0
    convs = [rewriter.messages_for(p) for p in eval_prompts(64)]
    params = services.sampling(n=4, max_new_tokens=160, seed=0)
    model.generate(convs[:2], params)  # warm-up (graphs, cache)
    t0 = time.perf_counter()
    outs = model.generate(convs, params)
    dt = time.perf_counter() - t0
    tok = model.llm.get_tokenizer()
    tokens = sum(len(tok.encode(text, add_special_tokens=False)) for row in outs for text in row)
    return {"model": settings.base_model, "prompts": len(convs), "n": 4, "max_new_tokens": 160,
            "load_s": round(load_s, 1), "s": round(dt, 2), "tokens": tokens, "tokens_per_s": round(tokens / dt, 1)}


def bench_train(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    import train_step  # bench/ is on sys.path: Python puts a script's own folder there

    from promptloop.services import Services

    peak = train_step.matmul_flops(8192, 5, device="cuda", dtype=torch.bfloat16)
    models = [("smollm2-135m", settings.base_model)]
    if args.large_model:
        models.append((Path(args.large_model).name, args.large_model))
    out: dict[str, Any] = {"bf16_matmul_tflops": round(peak / 1e12, 1), "models": {}}
    ns = argparse.Namespace(steps=args.steps, batch_size=args.batch_size, max_length=512, passes=2.0)
    for label, base in models:
        with tempfile.TemporaryDirectory(prefix="pl-gpu-bench-") as tmp:
            if base == settings.base_model:
                (Path(tmp) / "models").symlink_to(settings.models_dir, target_is_directory=True)
            services = Services(Settings(home=tmp, base_model=base, device="cuda"))
            rows = []
            for arm in ("sft", "dpo", "dpo-precompute"):
                try:
                    row = train_step.run_arm(arm, services, ns)
                except Exception as exc:  # an OOM on a large model is a figure too
                    row = {"arm": arm, "error": f"{type(exc).__name__}: {exc}"[:300]}
                if "achieved_gflops" in row:
                    row["mfu_measured"] = round(row["achieved_gflops"] * 1e9 / peak, 3)
                    if args.peak_tflops:
                        row["mfu_datasheet"] = round(row["achieved_gflops"] / (args.peak_tflops * 1e3), 3)
                rows.append(row)
                torch.cuda.empty_cache()
            out["models"][label] = rows
    return out


def bench_video(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    if not args.video_model:
        return {"skipped": "no --video-model given (a local CogVideoX-2B folder, e.g.)"}
    if not Path(args.video_model).exists():
        return {"skipped": f"--video-model {args.video_model} does not exist"}
    import tempfile

    from promptloop.agents.renderer import RenderRequest
    from promptloop.services import Services

    with tempfile.TemporaryDirectory(prefix="pl-gpu-video-") as tmp:
        services = Services(Settings(home=tmp, video={"model": args.video_model, "device": "cuda"}))
        renderer = services.renderer()
        prompts = eval_prompts(1 + args.videos)
        t0 = time.perf_counter()
        first = renderer.render_many([RenderRequest(prompt=prompts[0], seed=0)])[0]
        first_s = time.perf_counter() - t0
        times = []
        for i, p in enumerate(prompts[1:], start=1):
            t0 = time.perf_counter()
            art = renderer.render_many([RenderRequest(prompt=p, seed=i)])[0]
            if art.status != "ok":
                return {"model": args.video_model, "error": art.error}
            times.append(time.perf_counter() - t0)
    return {"model": args.video_model, "frames": first.frames, "width": first.width, "height": first.height,
            "steps": first.params.get("steps"), "first_s": round(first_s, 1), "videos": len(times),
            "s_per_video": round(sorted(times)[len(times) // 2], 1) if times else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large-model", help="a local 1-8B causal LM folder to train besides SmolLM2-135M")
    ap.add_argument("--video-model", help="a local text-to-video diffusers folder (CogVideoX-2B, ...)")
    ap.add_argument("--videos", type=int, default=3, help="timed renders after the first")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--peak-tflops", type=float, help="the GPU's datasheet dense bf16 TFLOP/s, for a second MFU")
    ap.add_argument("--only", help="comma-separated sections: vllm,train,video")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.large_model and not Path(args.large_model).exists():
        ap.error(f"--large-model {args.large_model} does not exist")
    settings = Settings()
    sections = {"vllm": bench_vllm, "train": bench_train, "video": bench_video}
    wanted = [s.strip() for s in (args.only or ",".join(sections)).split(",") if s.strip()]
    if set(wanted) - set(sections):
        ap.error(f"unknown section(s): {sorted(set(wanted) - set(sections))}; expected vllm, train, video")
    report: dict[str, Any] = {"bench": "gpu", "gpu": gpu_info(), "machine": platform.machine(), "sections": {}}
    for name in wanted:
        if not report["gpu"]["cuda"]:
            report["sections"][name] = {"skipped": "no CUDA device"}
            continue
        try:
            report["sections"][name] = sections[name](settings, args)
        except Exception as exc:  # one failing section must not hide the others' numbers
            report["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    out = args.out or settings.reports_dir / "bench_gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"GPU: {report['gpu'].get('name', 'none')}")
    for name, sec in report["sections"].items():
        if "skipped" in sec or "error" in sec:
            print(f"{name:6} {'skipped' if 'skipped' in sec else 'error'}: {sec.get('skipped') or sec.get('error')}")
        elif name == "train":
            print(f"train  bf16 matmul {sec['bf16_matmul_tflops']} TFLOP/s")
            for model, rows in sec["models"].items():
                for r in rows:
                    print(f"  {model:24} {r['arm']:15} " + (r.get("error") or
                          f"{r['s_per_step']:.2f} s/step  {r['achieved_gflops'] / 1e3:.1f} TFLOP/s  "
                          f"MFU {r['mfu_measured']:.1%}"))
        else:
            print(f"{name:6} " + ", ".join(f"{k} {v}" for k, v in sec.items()))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
