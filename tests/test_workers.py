"""Scale-out: two `promptloop collect --worker` processes share one PostgreSQL store.

Real processes, real models, a real server: the only coordination between
the workers is the store's row claiming (FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import Session, select

from promptloop.store import claims
from promptloop.store.engine import make_engine
from promptloop.store.models import Candidate, SFTExample, WorkItem

N_PROMPTS = 50


def _env(home: Path, url: str, base_model: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTLOOP_")}
    env.update(PROMPTLOOP_HOME=str(home), PROMPTLOOP_DATABASE_URL=url, PROMPTLOOP_BASE_MODEL=str(base_model),
               HF_HUB_OFFLINE="1", COLUMNS="200", PROMPTLOOP_GENERATION__MAX_NEW_TOKENS="16",
               PROMPTLOOP_CRITIC__USE_LLM="false", OMP_NUM_THREADS="1")
    return env


@pytest.mark.slow
def test_two_workers_process_50_prompts_once_each(postgres_url: str, smollm_path: Path, tmp_path: Path):
    cmd = [sys.executable, "-m", "promptloop.cli"]
    subprocess.run([*cmd, "init", "--no-models"], env=_env(tmp_path / "h0", postgres_url, smollm_path), check=True,
                   capture_output=True, timeout=300)
    args = ["collect", "sft", "--limit", str(N_PROMPTS), "--n", "1", "--max-refine-steps", "0", "--batch-size", "5"]
    t0 = time.perf_counter()
    procs = {w: subprocess.Popen([*cmd, *args, "--worker", w], env=_env(tmp_path / w, postgres_url, smollm_path),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in ("w1", "w2")}
    outs = {w: p.communicate(timeout=900) for w, p in procs.items()}
    wall = time.perf_counter() - t0
    for w, p in procs.items():
        assert p.returncode == 0, (w, outs[w][1][-3000:])
        assert f"worker {w}:" in outs[w][0] + outs[w][1], outs[w]

    engine = make_engine(postgres_url)
    try:
        with Session(engine) as s:
            items = s.exec(select(WorkItem)).all()
            examples = s.exec(select(SFTExample)).all()
            candidates = s.exec(select(Candidate)).all()
        [job] = {i.job for i in items}
        assert len(items) == N_PROMPTS and claims.progress(engine, job) == {"done": N_PROMPTS}
        by_worker = claims.done_by_worker(engine, job)
        assert set(by_worker) == {"w1", "w2"} and sum(by_worker.values()) == N_PROMPTS  # both worked, none lost
        assert all(i.attempts == 1 for i in items)  # nobody claimed a prompt twice
        per_prompt = Counter(e.prompt_id for e in examples)
        assert len(per_prompt) == N_PROMPTS and set(per_prompt.values()) == {1}  # one SFT row per prompt
        assert set(Counter(c.prompt_id for c in candidates).values()) == {1}  # n=1: one candidate each
        assert {e.prompt_id for e in examples} == {i.prompt_id for i in items}
    finally:
        engine.dispose()
    print(f"two workers, {N_PROMPTS} prompts: {wall:.1f} s wall, split {by_worker}")
