"""Real servers on loopback for tests: started as subprocesses, waited for, always stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def serve(cmd: list[str], health_url: str, log: Path, *, env: dict | None = None, cwd: Path | None = None,
          timeout: float = 120.0) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` (``env`` replaces the environment when given), wait for ``health_url``, stop it afterwards."""
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        wait_http(health_url, proc, log, timeout)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def transformers_server(model_path: Path, log: Path) -> Iterator[str]:
    """``transformers serve`` (transformers' own OpenAI-compatible FastAPI server) on the given model."""
    port = free_port()
    exe = Path(sys.executable).parent / "transformers"
    cmd = [str(exe), "serve", str(model_path), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           "--dtype", "float32", "--log-level", "warning"]
    with serve(cmd, f"http://127.0.0.1:{port}/health", log, env={**os.environ, "HF_HUB_OFFLINE": "1"}):
        yield f"http://127.0.0.1:{port}/v1"
