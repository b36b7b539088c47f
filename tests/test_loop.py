"""The self-improvement loop: promotion logic on a real store, and a real `promptloop loop run` killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from promptloop.errors import PromptloopError
from promptloop.graphs.loop import LoopConfig, decide
from promptloop.services import Services
from promptloop.store.models import Candidate, ModelVersion, SFTExample, TraceEvent, VersionStatus
from promptloop.store.versions import ensure_base, get_version, register


def _versions(rt: Services) -> None:
    ensure_base(rt.engine, "tiny")
    base = get_version(rt.engine, "base")
    for name in ("worse", "better"):
        register(rt.engine, name=name, base_model="tiny", adapter_path=f"/adapters/{name}", parent_id=base.id,
                 algorithm="dpo", round_index=0, metrics={}, data_provenance={})


def _items(base: list[float], shift: list[float]) -> list[dict]:
    return [{"judge_total": round(v + d, 4)} for v, d in zip(base, shift, strict=True)]


BASE = [0.70, 0.72, 0.75, 0.71, 0.69, 0.74, 0.73, 0.70]
GUARDED = {"intent_recall_at_1": 0.95, "repetition": 0.05, "fluency": -2.0, "unsafe_output_rate": 0.1,
           "benign_refusal_rate": 0.0}


def test_a_worse_version_is_not_promoted_and_a_better_one_is(settings):
    rt = Services(settings)
    _versions(rt)
    gate = settings.promotion
    items = {"base": _items(BASE, [0] * 8), "worse": _items(BASE, [-0.01] * 8),
             "better": _items(BASE, [0.03, 0.05, 0.02, 0.04, 0.06, 0.03, 0.04, 0.05])}
    evals = {k: {**GUARDED, "judge_total": sum(r["judge_total"] for r in v) / 8} for k, v in items.items()}
    d = decide(rt.engine, gate, "base", "worse", evals, items)
    assert not d["promoted"] and d["rule"] == "primary" and d["gain"] == -0.01
    assert d["interval"] == [-0.01, -0.01] and "not above zero" in d["reason"]
    assert get_version(rt.engine, "champion").name == "base"
    assert get_version(rt.engine, "worse").status == VersionStatus.rejected
    assert get_version(rt.engine, "worse").metrics["decision"]["promoted"] is False  # why, on the row
    # A tie is not an improvement either.
    tie = decide(rt.engine, gate, "base", "better", {"base": evals["base"], "better": evals["base"]},
                 {"base": items["base"], "better": items["base"]})
    assert not tie["promoted"] and tie["rule"] == "primary"
    d = decide(rt.engine, gate, "base", "better", evals, items)
    assert d["promoted"] and d["gain"] == pytest.approx(0.04) and d["interval"][0] > 0
    assert {g["metric"] for g in d["guardrails"]} == set(gate.guardrails) and all(g["passed"] for g in d["guardrails"])
    assert get_version(rt.engine, "champion").name == "better"
    with Session(rt.engine) as s:  # exactly one champion; the old one is archived, not deleted
        champs = s.exec(select(ModelVersion).where(ModelVersion.status == VersionStatus.champion)).all()
        assert [c.name for c in champs] == ["better"]
        assert s.exec(select(ModelVersion).where(ModelVersion.name == "base")).one().status == "archived"


def test_a_win_bought_with_repetition_and_length_is_rejected(settings):
    """The judge total rises on every prompt, but the rewrites loop: repetition passes its tolerance."""
    rt = Services(settings)
    _versions(rt)
    items = {"base": _items(BASE, [0] * 8), "worse": _items(BASE, [0.04] * 8)}
    evals = {"base": {**GUARDED, "judge_total": 0.7175, "words": 80},
             "worse": {**GUARDED, "judge_total": 0.7575, "repetition": 0.12, "words": 112}}
    d = decide(rt.engine, settings.promotion, "base", "worse", evals, items)
    assert not d["promoted"] and d["rule"] == "guardrail:repetition" and d["interval"][0] > 0
    rep = next(g for g in d["guardrails"] if g["metric"] == "repetition")
    assert (rep["parent"], rep["candidate"], rep["tolerance"], rep["passed"]) == (0.05, 0.12, 0.02, False)
    assert get_version(rt.engine, "champion").name == "base"
    stored = get_version(rt.engine, "worse").metrics["decision"]
    assert stored["rule"] == "guardrail:repetition" and stored["interval"] == d["interval"]
    with pytest.raises(PromptloopError, match="promotion settings"):
        decide(rt.engine, settings.promotion.model_copy(update={"guardrails": {"vibes": 0.1}}), "base", "worse",
               evals, items)


def test_loop_config_rejects_bad_schedules():
    assert LoopConfig(schedule=["sft", "dpo"]).algorithm(5) == "dpo"
    with pytest.raises(PromptloopError, match="schedule"):
        LoopConfig(schedule=["ppo"])
    with pytest.raises(PromptloopError, match="at least one round"):
        LoopConfig(rounds=0)
    cfg = LoopConfig(schedule=["sft", "dpo"], video_rounds=[1, 3], margin=0.2)
    assert cfg.collection(0) == ("sft", {"max_refine_steps": None})
    assert cfg.collection(1) == ("pairs", {"max_refine_steps": 0, "margin": 0.2, "rule": "margin", "video": True})
    assert "video" not in cfg.collection(2)[1] and cfg.collection(3)[1]["video"] is True
    with pytest.raises(PromptloopError, match=r"rounds \[0\] are not dpo rounds"):
        LoopConfig(schedule=["sft", "dpo"], video_rounds=[0, 2])


def _env(home: Path, smollm_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTLOOP_")}
    # 24 new tokens make ~20-word rewrites, below the 40-word floor that the helpful score asks for, so whether
    # any of the 9 candidates passed the default thresholds was down to sampling luck. This test is about the
    # stage checkpoints, not the critic: with the accuracy and helpfulness bars at 0, every harmless candidate
    # becomes SFT data and round 0 always has something to train on.
    env.update(PROMPTLOOP_HOME=str(home), PROMPTLOOP_BASE_MODEL=str(smollm_path), HF_HUB_OFFLINE="1",
               PROMPTLOOP_GENERATION__MAX_NEW_TOKENS="24", PROMPTLOOP_CRITIC__USE_LLM="false", COLUMNS="200",
               PROMPTLOOP_CRITIC__ACCURATE_THRESHOLD="0", PROMPTLOOP_CRITIC__HELPFUL_THRESHOLD="0",
               PROMPTLOOP_COLLECT__SAFETY_LIMIT="2")  # the DPO round's safety collection: 2 flagged requests
    return env


@pytest.mark.slow
def test_loop_run_killed_in_training_resumes_at_that_stage(tmp_path, smollm_path):
    home = tmp_path / "home"
    env = _env(home, smollm_path)
    cmd = [sys.executable, "-m", "promptloop.cli"]
    subprocess.run([*cmd, "init", "--no-models"], env=env, check=True, capture_output=True, cwd=tmp_path)
    args = [*cmd, "loop", "run", "--rounds", "2", "--limit", "3", "--n", "3", "--batch-size", "3",
            "--max-refine-steps", "0", "--margin", "0.0", "--eval-limit", "3", "--redteam-limit", "1",
            "--max-steps", "2", "--patience", "2"]  # both rounds run whatever the gate decides on 3 prompts
    log = tmp_path / "first.err"
    with log.open("w") as err:
        proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and "stage train round 0" not in log.read_text():
            time.sleep(0.3)
        assert proc.poll() is None, f"the loop ended before it could be killed:\n{log.read_text()[-3000:]}"
        time.sleep(1.0)  # into the training stage
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    from promptloop.store.engine import make_engine

    engine = make_engine(f"sqlite:///{home / 'promptloop.db'}")
    with Session(engine) as s:
        sft_before = s.exec(select(func.count()).select_from(SFTExample)).one()
        accepted = s.exec(select(func.count()).select_from(SFTExample).where(SFTExample.status == "accepted")).one()
        assert s.exec(select(ModelVersion).where(ModelVersion.algorithm == "sft")).first() is None
    assert accepted >= 1, "round 0 collected no accepted SFT example, so there was no training to kill"

    done = subprocess.run([*args, "--json"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming loop 'main' at round 0 stage train" in done.stderr
    assert "stage collect round 0" not in done.stderr  # the finished stage did not run again
    result = json.loads(done.stdout)
    state = result["state"]
    assert state["done"] and len(state["history"]) == 2
    assert [r["algorithm"] for r in state["history"]] == ["sft", "dpo"]
    r0 = state["history"][0]
    assert r0["training"]["global_step"] == 2 and r0["collected_by"] == "base"
    assert set(r0["timings"]) == {"collect", "train", "evaluate", "promote"}
    assert r0["decision"]["reason"]
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(SFTExample)).one() == sft_before
        persists = s.exec(select(TraceEvent.thread_id).where(TraceEvent.node == "persist")).all()
        # one chunk per round, plus the DPO round's safety collection, each persisted once
        assert len(persists) == len(set(persists)) == 3
        # no candidate stored twice by the resume (a round the gate did not promote samples with the same
        # champion again, so the same text may come back in the next round: unique per round)
        texts = s.exec(select(Candidate.round_id, Candidate.prompt_id, Candidate.model_version_id,
                              Candidate.text)).all()
        assert len(texts) == len(set(texts))
        versions = {v.name: v for v in s.exec(select(ModelVersion))}
    assert "main-r0-sft" in versions and versions["main-r0-sft"].parent_id == versions["base"].id
    champion = state["champion"]
    assert versions[champion].status == VersionStatus.champion
    # Round 1 collected with the champion of the time, and its version's parent is that champion.
    r1 = state["history"][1]
    assert r1["collected_by"] == r0["champion_after"]
    assert r1["collected"]["kind"] == "pairs" and "safety_pairs" in r1["collected"]  # the safety collection ran
    if "main-r1-dpo" in versions:
        assert versions["main-r1-dpo"].parent_id == versions[r0["champion_after"]].id
    # Every system in the before/after table was evaluated on the same held-out prompts.
    ev = result["eval"]
    systems = {r["system"] for r in ev["results"]}
    assert {"raw", "base", "main-r0-sft"} <= systems and ev["n_prompts"] == 3
    assert (home / "reports" / "loop-main" / "eval-eval.png").stat().st_size > 10_000
    # The rewrite command uses the champion by default.
    rw = subprocess.run([*cmd, "rewrite", "a cat playing piano", "--n", "1", "--max-refine-steps", "0", "--json"],
                        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rw.returncode == 0, rw.stderr[-2000:]
    assert json.loads(rw.stdout)["model_version"] == champion  # one prompt: one JSON object
    again = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already finished" in again.stderr
