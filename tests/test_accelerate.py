"""`accelerate launch --num_processes 2 --cpu -m promptloop train dpo`: two gloo DDP processes train one version.

Only the main process names, saves, registers and cleans up (the other waits at the barriers), so the store gets
exactly one version, the adapters folder one adapter, and stdout one JSON summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session, select

from promptloop.config import Settings
from promptloop.services import Services
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import ModelVersion

PAIRS = [("a cat playing piano", "A ginger cat presses the keys of a grand piano, warm lamp light, slow dolly in.",
          "cat piano"),
         ("fog in a pine forest", "Morning fog drifts between tall pines, pale sunrise light, slow aerial push.",
          "fog"),
         ("a red car on a mountain road", "A red sports car takes a mountain bend at golden hour, drone tracking.",
          "car car car"),
         ("a child flying a kite", "A child runs up a grassy hill with a yellow kite, windy afternoon, wide shot.",
          "kite")]


@pytest.mark.slow  # two processes load the 135M model and run 2 DDP steps on 2 cores (~2-3 min)
def test_dpo_under_accelerate_registers_one_version_from_two_processes(tmp_path: Path, smollm_path: Path):
    home = tmp_path / "home"
    rt = Services(Settings(home=home, base_model=str(smollm_path), device="cpu"))
    r1 = repo.ensure_round(rt.engine, 1)
    with session_scope(rt.engine) as s:
        for prompt, good, bad in PAIRS:
            p, _ = repo.add_prompt(s, prompt)
            c, _ = repo.add_candidate(s, p.id, good, round_id=r1)
            r, _ = repo.add_candidate(s, p.id, bad, round_id=r1)
            repo.add_pair(s, p.id, c.id, r.id, margin=0.5, round_id=r1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTLOOP_")}
    env.update(PROMPTLOOP_HOME=str(home), PROMPTLOOP_BASE_MODEL=str(smollm_path), PROMPTLOOP_DEVICE="cpu",
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    accelerate = Path(sys.executable).parent / "accelerate"
    proc = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "promptloop", "train", "dpo", "--round", "1",
         "--parent", "base", "--max-steps", "2", "--batch-size", "1", "--lr_scheduler_type", "constant", "--json"],
        capture_output=True, text=True, timeout=1500, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)  # one JSON document: only the main process prints
    assert (summary["version"], summary["global_step"], summary["reused"]) == ("r1-dpo", 2, False)
    with Session(rt.engine) as s:
        dpo = s.exec(select(ModelVersion).where(ModelVersion.algorithm == "dpo")).all()
    assert [v.name for v in dpo] == ["r1-dpo"]  # registered once
    v = dpo[0]
    assert v.metrics["processes"] == 2 and len(v.metrics["loss_curve"]) == 2  # one logged loss per step
    adapters = sorted(p.name for p in (home / "adapters").iterdir() if not p.name.startswith("."))
    assert adapters == ["r1-dpo"] and not (home / "adapters" / ".work" / "r1-dpo").exists()
    assert not list((home / "adapters").glob(".r1-dpo.tmp"))
    assert (Path(v.adapter_path) / "README.md").is_file()  # the model card, written once
    # the adapter loads and generates
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm_path)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm_path), v.adapter_path)
    ids = tok("a cat playing piano", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 8


@pytest.mark.slow  # two processes build the tiny video pipeline and run 2 DDP steps (~1 min)
def test_rwr_under_accelerate_saves_and_registers_once(tmp_path: Path):
    import numpy as np
    from helpers import rate_tiny_videos
    from safetensors.torch import load_file

    home = tmp_path / "home"
    rt = Services(Settings(home=home, device="cpu"))
    rate_tiny_videos(rt)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTLOOP_")}
    env.update(PROMPTLOOP_HOME=str(home), PROMPTLOOP_DEVICE="cpu", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    accelerate = Path(sys.executable).parent / "accelerate"
    proc = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "promptloop", "train", "rwr", "--name",
         "rwr-ddp", "--steps", "2", "--json"],
        capture_output=True, text=True, timeout=1500, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)  # one JSON document: the main process's
    assert summary["name"] == "rwr-ddp" and summary["processes"] == 2 and len(summary["loss_curve"]) == 2
    with Session(rt.engine) as s:
        rows = s.exec(select(ModelVersion).where(ModelVersion.algorithm == "rwr")).all()
    assert [v.name for v in rows] == ["rwr-ddp"]
    lora = load_file(str(home / "video_loras" / "rwr-ddp" / "pytorch_lora_weights.safetensors"))
    assert lora and any(float(np.abs(t.numpy()).sum()) > 0 for k, t in lora.items() if "lora_B" in k)
    loras = sorted(p.name for p in (home / "video_loras").iterdir() if not p.name.startswith("."))
    assert loras == ["rwr-ddp"] and not (home / "video_loras" / ".work" / "rwr-ddp").exists()
