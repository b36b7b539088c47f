"""Render and metric time per video on this machine (the tiny preset unless --model names another).

    python bench/video.py [--model tiny] [--videos 8] [--frames 9 --size 64] [--steps 4]

Renders ``--videos`` prompts one pipeline call at a time (after one warm-up
render), then scores each video (frame metrics + open_nsfw; alignment only
when video.alignment_model is set). Prints and appends to
$PROMPTLOOP_HOME/reports/video_bench.jsonl: device, dtype, seconds per render,
per MP4 write, per metric pass.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from promptloop.agents.renderer import RenderRequest
from promptloop.agents.video.diffusers_renderer import DiffusersRenderer
from promptloop.config import Settings
from promptloop.services import Services

PROMPTS = ["a red fox trotting through fresh snow", "waves breaking on black volcanic sand at dusk",
           "a chef flipping a pancake in a busy kitchen", "a paper boat drifting down a rainy street gutter",
           "hot air balloons rising over a misty valley", "a cat chasing a laser dot across a wooden floor",
           "neon signs reflecting in puddles at night", "a potter shaping clay on a spinning wheel"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--size", type=int, default=None, help="width = height")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    rt = Services(Settings())
    out = tempfile.mkdtemp(prefix="video-bench-")
    r = DiffusersRenderer(args.model, out_dir=out, progress=False)
    t0 = time.perf_counter()
    _ = r.pipeline
    load_s = time.perf_counter() - t0
    common = dict(num_frames=args.frames, width=args.size, height=args.size, steps=args.steps)
    r.render(RenderRequest(prompt="warm-up", seed=99, **common))
    render_s, paths = [], []
    for i in range(args.videos):
        t = time.perf_counter()
        a = r.render(RenderRequest(prompt=PROMPTS[i % len(PROMPTS)], seed=i, **common))
        render_s.append(time.perf_counter() - t)
        assert a.status == "ok", a.error
        paths.append(a.path)
    metric_s = []
    for i, p in enumerate(paths):
        t = time.perf_counter()
        rt.video_scorer.score_file(p, PROMPTS[i % len(PROMPTS)])
        metric_s.append(time.perf_counter() - t)
    req = r.resolve(RenderRequest(prompt="x", **common))
    row = {"model": r.model_id, "device": r.device, "dtype": str(r.torch_dtype), "videos": args.videos,
           "frames": req.num_frames, "size": f"{req.width}x{req.height}", "steps": req.steps,
           "load_s": round(load_s, 2), "render_s_median": round(statistics.median(render_s), 3),
           "render_s_mean": round(statistics.mean(render_s), 3),
           "metrics_s_median": round(statistics.median(metric_s[1:] or metric_s), 3),
           "metrics_first_s": round(metric_s[0], 3)}
    print(row)
    rt.settings.append_report("video_bench", row)


if __name__ == "__main__":
    main()
