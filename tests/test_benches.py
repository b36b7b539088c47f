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
