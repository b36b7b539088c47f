"""The benches that must run anywhere: bench/gpu.py on a machine without CUDA says what it skipped and exits 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), *args], capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PROMPTLOOP_HOME": str(home),
                                            "HF_HUB_OFFLINE": "1"})


def test_gpu_bench_skips_every_section_without_cuda(tmp_path):
    assert not torch.cuda.is_available()  # the CPU machines this suite runs on
    out = tmp_path / "gpu.json"
    proc = _run("--out", str(out), home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["gpu"] == {"cuda": False}
    assert report["sections"] == {name: {"skipped": "no CUDA device"} for name in ("vllm", "train", "video")}
    assert "GPU: none" in proc.stdout and proc.stdout.count("skipped: no CUDA device") == 3


def test_gpu_bench_refuses_unknown_sections_and_missing_models(tmp_path):
    proc = _run("--only", "vllm,tpu", home=tmp_path)
    assert proc.returncode == 2 and "unknown section(s): ['tpu']" in proc.stderr
    proc = _run("--large-model", str(tmp_path / "nope"), home=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_train_step_bench_counts_the_cpu_flash_attention_kernels():
    """torch's FLOP counter has no rule for the CPU flash-attention kernels (it counts 0); the bench adds the
    sdpa rules for them: 4*B*H*T^2*d forward, 2.5x that backward, half of each when the kernel runs causal."""
    import importlib.util

    from torch.utils.flop_counter import FlopCounterMode

    spec = importlib.util.spec_from_file_location("train_step", ROOT / "bench" / "train_step.py")
    train_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_step)
    b, h, t, d = 2, 4, 64, 32
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    counted = {}
    for causal in (False, True):
        with FlopCounterMode(display=False, custom_mapping=train_step.cpu_attention_rules()) as c:
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal).sum().backward()
        counted[causal] = {str(op).removeprefix("aten."): n for op, n in c.get_flop_counts()["Global"].items()}
    forward = 4 * b * h * t * t * d
    assert counted[False] == {"_scaled_dot_product_flash_attention_for_cpu": forward,
                              "_scaled_dot_product_flash_attention_for_cpu_backward": forward * 5 // 2}
    assert counted[True] == {op: n // 2 for op, n in counted[False].items()}
    with FlopCounterMode(display=False) as plain:
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    assert plain.get_total_flops() == 0  # what the bench counted before
