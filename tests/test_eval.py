"""Evaluation: metrics on known inputs, baselines and public rewrites on VBench, caching, table/JSON/plot output."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from promptloop.agents.safety.guard import refusal_message
from promptloop.config import Settings
from promptloop.evaluation.benches import load_bench, load_redteam, spaced
from promptloop.evaluation.metrics import is_refusal, per_item, recall_at_1
from promptloop.evaluation.report import plot_rounds, table, write_json
from promptloop.evaluation.runner import EvalConfig, SystemResult
from promptloop.services import Services
from promptloop.store.shipped import import_shipped, vbench_prompts, vbench_rewrites


def test_recall_at_1_counts_duplicates_as_hits(embedder):
    prompts = ["a cat playing piano", "a red sports car on a mountain road", "a cat playing piano", "fog in a forest"]
    rewrites = ["A fluffy cat presses piano keys in a cosy room.", "A red car races along a winding mountain road.",
                "A kitten plays a grand piano.", "A red sports car."]  # the last one lost its source
    assert recall_at_1(embedder, prompts, rewrites) == [True, True, True, False]


def test_per_item_metrics(embedder):
    rows = per_item(embedder, ["a cat playing piano"],
                    ["A fluffy cat plays the piano at night, warm lamp light, slow dolly shot, cinematic style."])
    r = rows[0]
    assert 0.5 < r["intent_cosine"] <= 1 and r["recall_at_1"] and r["words"] == 16
    assert r["aspect_coverage"] >= 4 / 6 and r["repetition"] == 0 and not r["refusal"]
    assert per_item(embedder, ["x y"], ["go go go go go go"])[0]["repetition"] > 0.5


def test_degeneracy_measures_on_known_texts(embedder):
    clean = "A red fox trots through fresh snow at dawn, low golden light, slow tracking shot."
    loop = "The fox runs. The fox runs. The fox runs. The fox runs and the"
    a, b = per_item(embedder, ["a fox in snow", "a fox in snow"], [clean, loop])
    assert a["distinct_2"] == 1.0 and a["longest_repeat"] == 0 and not a["cut_off"] and not a["meta"]
    assert b["distinct_2"] < 0.5 and b["longest_repeat"] == 9 and b["cut_off"] and not b["empty"]
    assert per_item(embedder, ["x"], ["Here is your prompt: a fox."])[0]["meta"]
    assert per_item(embedder, ["x"], [" "])[0]["empty"]


def test_intent_recall_against_a_distractor_pool(embedder):
    """Among the evaluated prompts alone a vague rewrite still finds its source; among many it does not."""
    prompts = ["a cat playing piano", "fog over a pine forest"]
    rewrites = ["An animal makes music indoors.", "Thick fog drifts between tall pine trees at dawn."]
    assert [r["recall_at_1"] for r in per_item(embedder, prompts, rewrites)] == [True, True]
    pool = ["a dog playing guitar", "a cat playing a violin", "a parrot singing opera", "a hamster on a keyboard",
            "a bear drumming in the woods", "a fox playing flute"]
    rows = per_item(embedder, prompts, rewrites, pool=pool)
    assert rows[1]["intent_recall_at_1"] and rows[1]["intent_recall_at_5"]
    assert not rows[0]["intent_recall_at_1"]  # "an animal makes music" is as near to the distractors
    assert rows[0]["intent_recall_at_5"] in (True, False) and rows[0]["fluency"] is None


def test_reference_lm_prefers_fluent_text(reference_lm):
    fluent, salad, loop = reference_lm.mean_logprob([
        "A small cat sits on the piano and plays a slow song in a warm, quiet room.",
        "room quiet warm a in song slow a plays and piano the on sits cat small A.",
        "x"])
    assert fluent < 0 and salad < fluent - 1.0  # nats per token: word salad is far less likely
    assert loop is None or loop < 0


def test_refusals_are_recognised():
    assert is_refusal(refusal_message(["violence_gore"])) and is_refusal(refusal_message(["unknown"]))
    assert is_refusal("Sorry, I cannot help with that.") and is_refusal("")
    assert not is_refusal("A sorry-looking dog waits in the rain.")


def test_subsets_are_evenly_spaced_and_aligned(engine):
    assert spaced(946, 4) == [0, 236, 473, 709] and spaced(5, None) == [0, 1, 2, 3, 4]
    bench = load_bench(engine, "vbench-all", 4)
    allr = vbench_rewrites()
    assert bench.name == "vbench-all4" and len(bench.prompts) == 4
    assert bench.public["gpt4o"][1] == allr["gpt4o"][236]
    test = load_bench(engine, "vbench", 4)  # vbench = vbench-test, spaced over its own prompts
    assert test.name == "vbench-test4" and test.public["gpt4o"] == [allr["gpt4o"][vbench_prompts().index(p)]
                                                                    for p in test.prompts]
    harmful, benign = load_redteam(3)
    assert len(harmful) == len(benign) == 3 and harmful[0] != harmful[1]


def test_public_rewrites_and_raw_prompts_on_vbench(settings, embedder, reference_lm, tmp_path, monkeypatch):
    rt = Services(settings)
    rt.__dict__.update(embedder=embedder, reference_lm=reference_lm)  # share the session's models
    import_shipped(rt.engine)
    cfg = EvalConfig(bench="vbench", limit=12, redteam_limit=4)
    seen: list[str] = []
    report = rt.evaluate(["raw", "public:gpt4o", "public:hunyuan"], cfg, progress=seen.append)
    res = report.by_system()
    raw, gpt = res["raw"].metrics, res["public:gpt4o"].metrics
    assert report.n_prompts == 12 and raw["n"] == 12
    assert raw["intent_cosine"] == pytest.approx(1.0, abs=1e-4) and raw["recall_at_1"] == 1.0
    assert gpt["words"] > 3 * raw["words"] and gpt["aspect_coverage"] > raw["aspect_coverage"]
    assert 0 < gpt["intent_cosine"] < 1 and 0 <= gpt["judge_total"] <= 1
    assert raw["unsafe_output_rate"] > 0.5 and raw["benign_refusal_rate"] == 0  # raw harmful prompts are unsafe
    # against the 946-prompt VBench pool: the raw prompt finds itself; GPT-4o's rewrites mostly find theirs
    assert raw["intent_recall_at_1"] == 1.0 and 0.5 <= gpt["intent_recall_at_1"] <= gpt["intent_recall_at_5"] <= 1
    assert gpt["distinct_2"] > 0.9 and gpt["longest_repeat"] < 6 and gpt["empty_rate"] == 0
    assert -6 < gpt["fluency"] < 0 and raw["fluency"] < 0
    assert "unsafe_output_rate" not in gpt  # public rewrites exist only for VBench prompts
    lines = [json.loads(x) for x in open(res["public:gpt4o"].outputs_path, encoding="utf-8")]
    assert len(lines) == 12 and lines[0]["output"] == load_bench(rt.engine, "vbench", 12).public["gpt4o"][0]
    again = rt.evaluate(["raw", "public:gpt4o"], cfg)
    assert all(r.cached for r in again.results) and again.by_system()["raw"].metrics == raw
    # Table, JSON and plot.
    console = Console(width=250, record=True)
    console.print(table(report))
    text = console.export_text()
    assert "public:gpt4o" in text and "judge total" in text and "intent R@1" in text
    assert "Not optimised by training" in text  # the legend says what each column means
    js = write_json(report, tmp_path / "r.json")
    assert json.loads(js.read_text())["results"][0]["system"] == "raw"
    trained = [SystemResult(f"r{i}", f"r{i}", {"judge_total": 0.6 + i / 10, "intent_cosine": 0.7}, round_index=i)
               for i in range(2)]
    import matplotlib.pyplot as plt

    drawn = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (drawn.append(fig), close(fig)))
    png = plot_rounds(report.results + trained, tmp_path / "r.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    ticks = drawn[0].axes[0].get_xticks()  # two rounds: no 0.5 round on the axis
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def test_unknown_bench_and_public_name(settings, embedder):
    from promptloop.errors import PromptloopError

    rt = Services(settings)
    rt.__dict__["embedder"] = embedder
    with pytest.raises(PromptloopError, match="unknown bench"):
        rt.evaluate(["raw"], EvalConfig(bench="nope"))
    with pytest.raises(PromptloopError, match="no public rewrites 'gpt5'"):
        rt.evaluate(["public:gpt5"], EvalConfig(bench="vbench", limit=2, redteam_limit=0))
    with pytest.raises(PromptloopError, match="unknown model version 'ghost'"):
        rt.evaluate(["ghost"], EvalConfig(bench="vbench", limit=2, redteam_limit=0))


def test_base_can_be_named_on_a_fresh_home_and_the_holdout_is_chosen_by_name(graph_runtime, tmp_path):
    """`eval --system base` before any loop registered the base version; `--redteam-file` takes only a holdout."""
    from promptloop.errors import PromptloopError

    rt = Services(Settings(home=tmp_path / "fresh", base_model=graph_runtime.settings.base_model, device="cpu"))
    rt.__dict__.update({k: graph_runtime.__dict__[k] for k in ("_models",) if k in graph_runtime.__dict__},
                       embedder=graph_runtime.embedder, reference_lm=graph_runtime.reference_lm)
    report = rt.evaluate(["base"], EvalConfig(bench="vbench", limit=1, redteam_limit=0, max_new_tokens=16))
    assert report.by_system()["base"].version == "base" and report.results[0].metrics["n"] == 1
    harmful, benign = load_redteam(2, "redteam_holdout_b.csv")
    assert len(harmful) == len(benign) == 2 and not {r.prompt for r in harmful} & {r.prompt for r in
                                                                                    load_redteam()[0]}
    with pytest.raises(PromptloopError, match="unknown red-team holdout 'redteam.csv'"):
        rt.evaluate(["raw"], EvalConfig(bench="vbench", limit=1, redteam_file="redteam.csv"))
