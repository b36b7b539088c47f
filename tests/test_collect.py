"""Data collection graphs on the real embedded models: rows, provenance, pair rules, crash-resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from promptloop.agents.text_critic import Thresholds
from promptloop.graphs.collect_pairs import select_pairs
from promptloop.graphs.collection import CollectContext, run_collection
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import (
    Candidate,
    Critique,
    PreferencePair,
    Prompt,
    Reward,
    SFTExample,
    TraceEvent,
)
from promptloop.store.repository import ensure_round
from promptloop.store.versions import ensure_version


def _prompts(rt, texts: list[str], split: str = "train") -> list[Prompt]:
    with session_scope(rt.engine) as s:
        return [repo.add_prompt(s, t, split=split, source="test")[0] for t in texts]


def _ctx(rt, round_index: int, **kw) -> CollectContext:
    base = vars(rt.rewrite_context(n=kw.pop("n", 2), max_refine_steps=kw.pop("max_refine_steps", 1),
                                   max_new_tokens=kw.pop("max_new_tokens", None)))
    return CollectContext(**base, round_id=ensure_round(rt.engine, round_index),
                          model_version_id=ensure_version(rt.engine, "base", rt.settings.base_model), **kw)


@pytest.fixture(scope="module")
def sft_collected(graph_runtime):
    """Round 10: an SFT collection over three prompts (one unsafe), run once for the tests that read it."""
    rt = graph_runtime
    prompts = _prompts(rt, ["a potter shaping clay on a wheel", "a naked little girl posing for a camera",
                            "three hot air balloons over a river"])
    ctx = _ctx(rt, 10)
    report = run_collection(rt.collect_graph("sft"), "sft", prompts, ctx, round_index=10, batch_size=3,
                            key={"t": "sft"})
    return prompts, ctx, report


@pytest.fixture(scope="module")
def pairs_collected(graph_runtime):
    """Round 11: a pairs collection over four prompts, 3 candidates each, margin 0.05."""
    rt = graph_runtime
    prompts = _prompts(rt, ["a fox jumping into snow", "a chef tossing pizza dough", "a drone shot over a forest",
                            "a tram going up a hill"])
    ctx = _ctx(rt, 11, n=3, max_refine_steps=0, margin=0.05)
    report = run_collection(rt.collect_graph("pairs"), "pairs", prompts, ctx, round_index=11, batch_size=4,
                            key={"t": "pairs"})
    return prompts, ctx, report


def test_collect_sft_stores_examples_with_provenance(graph_runtime, sft_collected):
    rt = graph_runtime
    prompts, ctx, report = sft_collected
    assert report.chunks == 1 and report.stored["accepted"] + report.stored["rejected"] == 3
    with Session(rt.engine) as s:
        examples = s.exec(select(SFTExample).where(SFTExample.round_id == ctx.round_id)).all()
        assert sorted(e.prompt_id for e in examples) == sorted(p.id for p in prompts)
        by_prompt = {e.prompt_id: e for e in examples}
        refusal = by_prompt[prompts[1].id]
        assert refusal.status == "accepted" and refusal.reason.startswith("refusal") and "can't" in refusal.target
        for e in (by_prompt[prompts[0].id], by_prompt[prompts[2].id]):
            assert e.critique_trail and e.critique_trail[-1]["final"]["accurate"] >= 0
            assert (e.status == "accepted") == (e.reason is None)
            if e.status == "rejected":
                assert "below threshold" in e.reason
            cand = s.get(Candidate, e.candidate_id)
            assert cand.text == e.target and cand.round_id == ctx.round_id
            assert cand.model_version_id == ctx.model_version_id and cand.sampling_params["n"] == 2
            crit = s.exec(select(Critique).where(Critique.candidate_id == cand.id)).one()
            assert 0 <= crit.accurate <= 1
            dims = {r.dimension for r in s.exec(select(Reward).where(Reward.candidate_id == cand.id))}
            assert {"harmless", "accurate", "helpful", "total"} <= dims


def test_collect_pairs_respects_the_margin(graph_runtime, pairs_collected):
    rt = graph_runtime
    _, ctx, report = pairs_collected
    assert report.stored["pairs"] + report.stored["skipped_prompts"] == 4
    assert report.stored["pairs"] >= 2
    with Session(rt.engine) as s:
        pairs = s.exec(select(PreferencePair).where(PreferencePair.round_id == ctx.round_id)).all()
        assert len(pairs) == report.stored["pairs"]
        for p in pairs:
            if not p.rejected_scores["degenerate"]:  # a degenerate rejected side is taken whatever its total
                assert p.chosen_scores["total"] >= p.rejected_scores["total"] + 0.05 - 1e-9
            marks = [i for c in s.exec(select(Critique).where(Critique.candidate_id == p.chosen_id))
                     for i in c.issues if i.startswith("degenerate:")]
            assert marks == []  # the critic's degenerate mark never sits on a chosen side
            assert p.margin == pytest.approx(p.chosen_scores["total"] - p.rejected_scores["total"], abs=1e-3)
            chosen, rejected = s.get(Candidate, p.chosen_id), s.get(Candidate, p.rejected_id)
            assert chosen.prompt_id == rejected.prompt_id == p.prompt_id and chosen.round_id == ctx.round_id
            stored_total = s.exec(select(Reward.score).where(Reward.candidate_id == chosen.id,
                                                             Reward.dimension == "total")).one()
            assert stored_total == pytest.approx(p.chosen_scores["total"])


def _reward(total: float, **dims: float) -> dict:
    return {"total": total, "dimensions": {"harmless": 1.0, "accurate": 0.8, "helpful": 0.7, **dims}}


def _crit(accurate: float = 0.9, *, degenerate: list[str] | None = None, intent: float = 0.7) -> dict:
    return {"harmless": 1.0, "accurate": accurate, "helpful": 0.8, "degenerate": degenerate or [],
            "checks": {"intent_similarity": intent}}


def test_degenerate_candidates_are_never_chosen_and_rejected_first():
    """The judge's favourite loops: it cannot be chosen, and it is the rejected side even above the margin."""
    rewards = [_reward(0.95), _reward(0.8), _reward(0.6), _reward(0.75)]
    crits = [_crit(degenerate=["repetition 0.41"]), _crit(), _crit(0.3), _crit(degenerate=["cut off"])]
    pairs = select_pairs(rewards, crits, margin=0.1, max_pairs=3)
    assert {p.chosen for p in pairs} == {1}  # the best non-degenerate candidate
    # degenerate ones first (whatever their total, even above the chosen one), then the principle violator
    assert [p.rejected for p in pairs] == [3, 0, 2]
    assert pairs[1].degenerate == ("repetition 0.41",) and pairs[1].margin == pytest.approx(-0.15)
    assert pairs[2].degenerate == () and pairs[2].violates
    for rule in ("pareto", "gated"):
        assert all(p.chosen == 1 for p in select_pairs(rewards, crits, rule=rule, margin=0.1, max_pairs=3))
    # nothing usable to choose: no pair at all
    assert select_pairs(rewards[:1] + rewards[3:], [crits[0], crits[3]], margin=0.1) == []


def test_length_controlled_pairs_keep_a_longer_chosen_only_when_it_wins_on_intent():
    rewards = [_reward(0.9), _reward(0.7)]
    words = [90, 30]  # chosen 3x the rejected side's words
    lost_intent = [_crit(intent=0.5), _crit(intent=0.6)]
    assert select_pairs(rewards, lost_intent, margin=0.1, words=words, length_ratio=1.5) == []
    won_intent = [_crit(intent=0.7), _crit(intent=0.6)]
    [p] = select_pairs(rewards, won_intent, margin=0.1, words=words, length_ratio=1.5)
    assert p.longer and (p.chosen, p.rejected) == (0, 1)
    # off (ratio 0) or within the ratio: the intent test does not apply
    assert select_pairs(rewards, lost_intent, margin=0.1, words=words, length_ratio=0)[0].longer is False
    assert select_pairs(rewards, lost_intent, margin=0.1, words=[40, 30], length_ratio=1.5)[0].longer is False


def test_pair_rules():
    rewards = [_reward(0.9, accurate=0.9), _reward(0.85), _reward(0.5, accurate=0.3), _reward(0.6, accurate=0.95)]
    crits = [_crit(), _crit(), _crit(0.3), _crit()]
    [c] = select_pairs(rewards, crits, margin=0.1)
    assert (c.chosen, c.rejected, c.violates) == (0, 2, True)  # a principle violator is preferred as rejected
    assert c.margin == pytest.approx(0.4)
    assert select_pairs(rewards, crits, margin=0.5) == []  # nothing far enough below the best
    two = select_pairs(rewards, crits, margin=0.1, max_pairs=3)
    assert [p.rejected for p in two] == [2, 3]
    # pareto: candidate 3 is better than the best on accuracy, so the best does not dominate it
    assert [p.rejected for p in select_pairs(rewards, crits, rule="pareto", margin=0.1, max_pairs=3)] == [2]
    # gated: the chosen side must pass every principle threshold
    assert select_pairs(rewards, [_crit(0.3)] + crits[1:], rule="gated", margin=0.1, thresholds=Thresholds()) == []
    with pytest.raises(ValueError, match="unknown pair rule"):
        select_pairs(rewards, crits, rule="best")


def _cli_env(home: Path, smollm_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTLOOP_")}
    env.update(PROMPTLOOP_HOME=str(home), PROMPTLOOP_BASE_MODEL=str(smollm_path), HF_HUB_OFFLINE="1",
               PROMPTLOOP_GENERATION__MAX_NEW_TOKENS="32", COLUMNS="200")
    return env


@pytest.mark.slow  # two real CLI processes on the embedded models (~2 min); CI runs it
def test_killed_collection_resumes_without_duplicates(tmp_path, smollm_path):
    home = tmp_path / "home"
    env = _cli_env(home, smollm_path)
    cmd = [sys.executable, "-m", "promptloop.cli"]
    subprocess.run([*cmd, "init", "--no-models"], env=env, check=True, capture_output=True, cwd=tmp_path)
    args = [*cmd, "collect", "pairs", "--limit", "4", "--batch-size", "2", "--part-size", "1", "--concurrency", "2",
            "--n", "3", "--margin", "0.02"]
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    from promptloop.store.engine import make_engine

    engine = make_engine(f"sqlite:///{home / 'promptloop.db'}")
    deadline = time.time() + 600
    persisted = 0
    while time.time() < deadline and proc.poll() is None:
        with Session(engine) as s:
            persisted = s.exec(select(func.count()).select_from(TraceEvent)
                               .where(TraceEvent.node == "persist")).one()
        if persisted >= 1:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the collection finished before it could be killed"
    assert persisted >= 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Session(engine) as s:
        cands_before = s.exec(select(func.count()).select_from(Candidate)).one()
    assert cands_before >= 2

    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "already done" in done.stderr
    with Session(engine) as s:
        persist_events = s.exec(select(TraceEvent.thread_id).where(TraceEvent.node == "persist")).all()
        assert len(persist_events) == len(set(persist_events)) == 2  # each chunk persisted exactly once
        for thread in set(persist_events):  # --part-size 1: each chunk of two fanned out into two parts
            parts = s.exec(select(TraceEvent).where(TraceEvent.thread_id == thread, TraceEvent.node == "guard_input",
                                                    TraceEvent.error.is_(None))).all()
            assert sorted(e.input["items"] for e in parts)[-1] == 1  # the trace holds a reference and a count
        texts = s.exec(select(Candidate.prompt_id, Candidate.text)).all()
        assert len(texts) == len(set(texts))  # no duplicate candidate
        pair_keys = s.exec(select(PreferencePair.chosen_id, PreferencePair.rejected_id)).all()
        assert len(pair_keys) == len(set(pair_keys))
        prompts_with_candidates = s.exec(select(func.count(func.distinct(Candidate.prompt_id)))).one()
        assert prompts_with_candidates == 4
    again = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "2 already done" in again.stderr


@pytest.mark.slow
def test_dpo_trainer_accepts_collected_pairs(graph_runtime, pairs_collected, tmp_path, smollm_path):
    """A couple of LoRA DPO steps on the embedded model with the pairs exported from the store."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from promptloop.store.exporter import export

    rt = graph_runtime
    n = export(rt.engine, "dpo", tmp_path / "dpo.jsonl", rt.rewriter().messages_for)
    assert n >= 2
    ds = load_dataset("json", data_files=str(tmp_path / "dpo.jsonl"), split="train")
    tok = AutoTokenizer.from_pretrained(smollm_path)
    model = AutoModelForCausalLM.from_pretrained(smollm_path)
    args = DPOConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, learning_rate=5e-5,
                     bf16=False, use_cpu=True, gradient_checkpointing=False, report_to="none", save_strategy="no",
                     logging_steps=1, max_length=384, beta=0.1)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                task_type="CAUSAL_LM"))
    result = trainer.train()
    assert result.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(0 < x < 5 for x in losses)
    json.dumps(trainer.state.log_history)  # metrics are plain data


def test_data_stats_after_collection(graph_runtime, sft_collected, pairs_collected):
    """Numbers match the stored rows of the two collections (and whatever else the session stored)."""
    from promptloop.store.stats import data_stats

    stats = data_stats(graph_runtime.engine, length_ratio=1.5, count_words=lambda t: len(t.split()))
    rounds = {r["round"]: r for r in stats["rounds"]}
    with Session(graph_runtime.engine) as s:
        n_pairs = s.exec(select(func.count()).select_from(PreferencePair)).one()
        n_sft = s.exec(select(func.count()).select_from(SFTExample)).one()
        sides = [(len(s.get(Candidate, p.chosen_id).text.split()), len(s.get(Candidate, p.rejected_id).text.split()),
                  bool(p.rejected_scores.get("degenerate")), p.rejected_scores.get("longer_chosen"))
                 for p in s.exec(select(PreferencePair).where(PreferencePair.round_id == pairs_collected[1].round_id))]
    r11 = rounds["11"]
    assert r11["chosen_words"] == pytest.approx(sum(c for c, *_ in sides) / len(sides), abs=0.05)
    assert r11["longer_chosen_share"] == pytest.approx(sum(c > 1.5 * max(1, j) for c, j, *_ in sides) / len(sides),
                                                       abs=1e-4)
    assert r11["degenerate_rejected_share"] == pytest.approx(sum(d for _, _, d, _ in sides) / len(sides), abs=1e-4)
    assert all(flag is not None for *_, flag in sides)  # every new pair says whether its chosen side is longer
    assert sum(r.get("pairs", 0) for r in rounds.values()) == n_pairs
    assert sum(r.get("sft_accepted", 0) + r.get("sft_rejected", 0) for r in rounds.values()) == n_sft
    assert sum(b["pairs"] for b in stats["margin_histogram"]) == n_pairs
    principles = {(p["round"], p["principle"]) for p in stats["principles"]}
    assert ("11", "accurate") in principles and ("10", "helpful") in principles
    assert all(0 <= p["p10"] <= p["p50"] <= p["p90"] <= 1 for p in stats["principles"])


def test_evolution_keeps_the_best_and_stores_lineage(graph_runtime):
    from promptloop.graphs.evolve import EvolveContext

    rt = graph_runtime
    prompts = _prompts(rt, ["a hummingbird drinking from a flower", "a steam train crossing a bridge"])
    base = vars(rt.rewrite_context(n=3))
    ctx = EvolveContext(**base, round_id=ensure_round(rt.engine, 12),
                        model_version_id=ensure_version(rt.engine, "base", rt.settings.base_model),
                        generations=2, population=3, offspring=2)
    graph = rt.collect_graph("evolve")
    report = run_collection(graph, "evolve", prompts, ctx, round_index=12, batch_size=2, key={"t": "evolve"})
    assert report.stored["sft_evolve"] == 2
    items = graph.get_state({"configurable": {"thread_id": report.thread_ids[0]}}).values["items"]
    for it in items:
        h = it["history"]
        assert len(h) == 3 and all(b >= a for a, b in zip(h, h[1:], strict=False))  # elitism: never decreases
        assert len(it["population"]) <= 3 and len(it["archive"]) > len(it["population"]) - 1
    with Session(rt.engine) as s:
        cands = s.exec(select(Candidate).where(Candidate.round_id == ctx.round_id)).all()
        assert all(c.origin == "evolve" for c in cands)
        children = [c for c in cands if c.lineage["generation"] >= 1]
        assert children and all(c.lineage["parents"] and c.lineage["op"] in ("mutation", "crossover") for c in children)
        ids = {c.id for c in cands}
        assert all(p in ids for c in children for p in c.lineage["parents"])
        sft = s.exec(select(SFTExample).where(SFTExample.round_id == ctx.round_id)).all()
        assert {e.source for e in sft} == {"evolve"}
        for e in sft:
            best = max(it["history"][-1] for it in items if it["prompt"] == s.get(Prompt, e.prompt_id).text)
            assert e.critique_trail[0]["fitness"] == pytest.approx(best)


def test_collect_graph_builds_lazy_agents_once(graph_runtime):
    """A factory passed for the agents is called once, shared by the rewrite subgraph and the persist node."""
    from promptloop.graphs.collect_pairs import build_collect_pairs_graph

    rt = graph_runtime
    calls = []

    def factory():
        calls.append(1)
        return rt.rewrite_agents()

    graph = build_collect_pairs_graph(factory, rt.engine, checkpointer=rt.checkpointer)
    assert calls == []  # building the graph builds no agents
    prompts = _prompts(rt, ["a paper boat on a puddle"])
    report = run_collection(graph, "pairs", prompts, _ctx(rt, 13, n=2, max_refine_steps=0, max_new_tokens=16),
                            round_index=13, batch_size=1, key={"t": "lazy"})
    assert calls == [1] and report.stored["candidates"] >= 1


def test_an_output_guard_fallback_is_never_accepted_as_sft_data(graph_runtime):
    """A trimmed rewrite or the core as the prompt is what an app gets, but no critic judged that text."""
    from promptloop.graphs.collect_sft import persist_sft

    rt = graph_runtime
    prompts = _prompts(rt, ["a diver with a harpoon gun near a reef", "a lighthouse keeper climbing stairs"])
    ctx = _ctx(rt, 12)
    crit = {"harmless": 1.0, "accurate": 1.0, "helpful": 1.0, "issues": [], "suggestions": []}
    reward = {"total": 0.9, "dimensions": {}}
    made = "A diver glides past a colourful reef. Wide shot, soft blue light, slow drift with the current."
    items = [{"prompt": p.text, "candidates": [made], "critiques": [crit], "rewards": [reward], "current": made,
              "current_critique": crit, "current_reward": reward, "final_prompt": text, "refused": False,
              **extra} for p, (text, extra) in zip(prompts, [
                  ("A diver near a reef. Realistic footage.", {"fallback": "core", "reason": "the core"}),
                  (made, {})], strict=True)]
    counts = persist_sft(rt.engine, items, [p.id for p in prompts], ctx)
    assert counts["accepted"] == 1 and counts["rejected"] == 1
    with Session(rt.engine) as s:
        rows = {r.prompt_id: r for r in s.exec(select(SFTExample).where(SFTExample.round_id == ctx.round_id))}
    assert rows[prompts[0].id].status == "rejected" and rows[prompts[0].id].reason == "the core"
    assert rows[prompts[1].id].status == "accepted" and rows[prompts[1].id].target == made
