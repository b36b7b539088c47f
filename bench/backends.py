"""Rewriter throughput: the in-process transformers backend vs the OpenAI-compatible backend, one run.

    python bench/backends.py [--prompts 16] [--n 4] [--max-new-tokens 64] [--concurrency 8]
                             [--continuous-batching]

Same model (the prepared embedded SmolLM2), same rewriter conversations, same
sampling settings. The HTTP arm starts `transformers serve` on loopback (the
server the backend is tested against) and sends the conversations through
OpenAIChatModel; the in-process arm batches them in one generate call. Output
tokens are counted with the model's tokenizer, since sampled lengths differ.
Results go to $PROMPTLOOP_HOME/reports/bench_backends.jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from promptloop.agents.llm.base import SamplingParams
from promptloop.agents.llm.openai_backend import OpenAIChatModel
from promptloop.agents.llm.prepare import prepare_model
from promptloop.agents.llm.transformers_backend import TransformersChatModel
from promptloop.config import Settings
from promptloop.services import Services
from promptloop.store.shipped import import_shipped


def _serve(model: Path, port: int, cb: bool) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "transformers"
    cmd = [str(exe), "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           "--dtype", "float32"] + (["--continuous-batching"] if cb else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("transformers serve did not come up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--port", type=int, default=8799)
    ap.add_argument("--continuous-batching", action="store_true", help="start the server with continuous batching")
    args = ap.parse_args()
    settings = Settings()
    rt = Services(settings)
    import_shipped(rt.engine)
    from promptloop.store.repository import select_prompts

    prompts = [p.text for p in select_prompts(rt.engine, "train", args.prompts)]
    convs = [rt.rewriter(with_model=False).messages_for(p) for p in prompts]
    model_path = prepare_model(settings.base_model, settings.models_dir).path
    params = SamplingParams(n=args.n, max_new_tokens=args.max_new_tokens, temperature=0.8, top_p=0.95, seed=0)

    local = TransformersChatModel(model_path, device="cpu", batch_size=args.prompts)
    local.generate(convs[:1], params.model_copy(update={"n": 1, "max_new_tokens": 2}))  # warm up
    t = time.perf_counter()
    local_out = local.generate(convs, params)
    local_s = time.perf_counter() - t

    proc = _serve(model_path, args.port, args.continuous_batching)
    try:
        remote = OpenAIChatModel(f"http://127.0.0.1:{args.port}/v1", str(model_path), concurrency=args.concurrency,
                                 extra_body={"generation_config": json.dumps({"do_sample": True})})
        remote.generate(convs[:1], params.model_copy(update={"n": 1, "max_new_tokens": 2}))  # warm up (loads)
        t = time.perf_counter()
        remote_out = remote.generate(convs, params)
        remote_s = time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    def tokens(outs: list[list[str]]) -> int:
        return sum(len(local.tokenizer(t, add_special_tokens=False).input_ids) for o in outs for t in o)

    row = {"prompts": len(prompts), "n": args.n, "max_new_tokens": args.max_new_tokens,
           "concurrency": args.concurrency, "continuous_batching": args.continuous_batching,
           "in_process_s": round(local_s, 2), "in_process_tokens": tokens(local_out),
           "http_s": round(remote_s, 2), "http_tokens": tokens(remote_out), "http_requests": remote.requests - 1}
    row["in_process_tok_per_s"] = round(row["in_process_tokens"] / local_s, 1)
    row["http_tok_per_s"] = round(row["http_tokens"] / remote_s, 1)
    row["ratio_in_process_over_http"] = round(row["in_process_tok_per_s"] / row["http_tok_per_s"], 2)
    settings.append_report("bench_backends", row)
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
