"""The real `promptloop` command in a subprocess, on an isolated PROMPTLOOP_HOME."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

COMMANDS = ["init", "db", "models", "prompts", "data", "rewrite", "collect", "teacher", "train", "loop", "eval", "render",
            "judge",
            "ratings", "ui", "push", "config"]


def run(home: Path, *args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_cli(home, *args, check=check, cwd=cwd)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "plhome"


def test_help_lists_every_command(home):
    out = run(home, "--help").stdout
    for cmd in COMMANDS:
        assert cmd in out
    assert "upgrade" in run(home, "db", "--help").stdout
    models = run(home, "models", "--help").stdout
    assert all(c in models for c in ("prepare", "list", "capabilities", "recheck"))
    prompts = run(home, "prompts", "--help").stdout
    assert all(c in prompts for c in ("import", "list", "stats"))
    assert "export" in run(home, "data", "--help").stdout
    assert not home.exists()  # --help writes nothing


def test_init_import_list_stats(home, tmp_path):
    run(home, "init", "--no-models")
    assert (home / "promptloop.db").is_file()
    stats = json.loads(run(home, "prompts", "stats", "--json").stdout)
    by = {}
    for g in stats["groups"]:
        by[(g["split"], g["source"])] = by.get((g["split"], g["source"]), 0) + g["count"]
    assert by[("train", "shipped")] == 240 and by[("eval", "shipped")] == 60
    assert by[("redteam", "redteam")] == 332  # VBench: 943 distinct prompts (3 repeat), a quarter held out by hash
    assert by[("test", "vbench")] == 226 and by[("train", "vbench")] == 717
    f = tmp_path / "mine.txt"
    f.write_text("a lighthouse in a storm\na cat playing piano\n")
    res = run(home, "prompts", "import", str(f), "--split", "eval", "--source", "mine")
    assert "1 new" in res.stderr and "1 already stored" in res.stderr
    listed = json.loads(run(home, "prompts", "list", "--source", "mine", "--json").stdout)
    assert [p["text"] for p in listed] == ["a lighthouse in a storm"]
    assert listed[0]["split"] == "eval"


def test_bad_input_exit_code_and_message(home, tmp_path):
    run(home, "init", "--no-models", "--no-data")
    bad = tmp_path / "bad.csv"
    bad.write_text("caption\nhello\n")
    res = run(home, "prompts", "import", str(bad), check=False)
    assert res.returncode == 2 and "missing column" in res.stderr
    assert "Traceback" not in res.stderr
    res = run(home, "prompts", "import", str(tmp_path / "nope.txt"), check=False)
    assert res.returncode == 2 and "no such file" in res.stderr
    res = run(home, "data", "export", "sft", str(tmp_path / "x.jsonl"), check=False)
    assert res.returncode == 2 and "no sft data" in res.stderr
    res = run(home, "data", "export", "ppo", str(tmp_path / "x.jsonl"), check=False)
    assert res.returncode == 2 and "unknown export kind" in res.stderr
    res = run(home, "--device", "tpu", "prompts", "list", check=False)
    assert res.returncode == 2 and "device" in res.stderr
    assert json.loads(run(home, "prompts", "stats", "--json").stdout)["total"] == 0


def test_toml_and_env_reach_the_command(home, tmp_path):
    run(home, "init", "--no-models", "--no-data")
    (tmp_path / "promptloop.toml").write_text("max_prompt_chars = 10\n")
    f = tmp_path / "p.txt"
    f.write_text("a very long prompt indeed\n")
    res = run(home, "prompts", "import", str(f), check=False, cwd=tmp_path)
    assert res.returncode == 2 and "over the limit of 10" in res.stderr


def test_models_prepare_list_and_rewrite(home, smollm_path):
    run(home, "init", "--no-models", "--no-data")
    res = run(home, "models", "prepare", str(smollm_path))
    assert "already prepared" in res.stderr
    listed = json.loads(run(home, "models", "list", "--json").stdout)
    names = {m["name"] for m in listed}
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= names
    res = run(home, "--base-model", str(smollm_path), "rewrite", "a cat playing piano", "a red car",
              "--n", "2", "--max-new-tokens", "30", "--max-refine-steps", "0", "--json")
    out = json.loads(res.stdout)
    assert [o["prompt"] for o in out] == ["a cat playing piano", "a red car"]
    # only promptloop's own lines: no library load bars, advisory logs or deprecation warnings
    for noise in ("Loading weights", "it/s]", "Warning", "warnings.warn", "past_key_values"):
        assert noise not in res.stderr, res.stderr
    assert all(1 <= len(o["candidates"]) <= 2 and o["final_prompt"] in o["candidates"] for o in out)
    assert out[0]["trace_id"] == out[1]["trace_id"]  # one batched graph run
    res = run(home, "rewrite", "   ", check=False)
    assert res.returncode == 2 and "empty prompt" in res.stderr


@pytest.mark.slow
def test_rewrite_json_on_a_fresh_home_prints_only_json(home):
    """The first command on a fresh home prepares the model on the way: its bar goes to stderr, stdout stays JSON."""
    run(home, "init", "--no-models", "--no-data")
    res = run(home, "rewrite", "a cat playing piano", "--n", "2", "--max-new-tokens", "24", "--max-refine-steps",
              "0", "--json")
    assert json.loads(res.stdout)["prompt"] == "a cat playing piano"  # nothing before or after the JSON
    assert "prepare smollm2-135m-instruct" in res.stderr


def test_only_the_promptloop_package_is_installed(tmp_path):
    """The repository root maps to `promptloop`; no bare `agents`/`store`/`graphs` module leaks out."""
    code = ("import importlib.util as u; import promptloop.agents, promptloop.store, promptloop.graphs, "
            "promptloop.learners; print([m for m in ('agents', 'store', 'graphs', 'learners', 'cli', 'config') "
            "if u.find_spec(m) is not None])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == "[]"


def test_train_loop_eval_commands_report_bad_input(home, tmp_path):
    run(home, "init", "--no-models")
    res = run(home, "train", "sft", "--config", str(tmp_path / "missing.yaml"), check=False)
    assert res.returncode == 2 and "learner config not found" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    res = run(home, "train", "dpo", "--config", str(bad), check=False)
    assert res.returncode == 2 and "unknown dpo setting(s): learning_rat" in res.stderr
    res = run(home, "train", "dpo", check=False)
    assert res.returncode == 2 and "no preference pairs in the store" in res.stderr
    res = run(home, "loop", "status", "--name", "nope", check=False)
    assert res.returncode == 2 and "no loop named 'nope'" in res.stderr
    res = run(home, "loop", "run", "--schedule", "sft,ppo", check=False)
    assert res.returncode == 2 and "schedule" in res.stderr
    res = run(home, "eval", "--bench", "nope", "--system", "raw", check=False)
    assert res.returncode == 2 and "unknown bench 'nope'" in res.stderr


@pytest.mark.slow
def test_eval_command_on_public_rewrites(home):
    run(home, "init", "--no-models")
    res = run(home, "eval", "--bench", "vbench", "--limit", "6", "--redteam-limit", "0", "--system", "raw",
              "--system", "public:wan21_qwen25_3b", "--json")
    out = json.loads(res.stdout)
    assert out["bench"] == "vbench-test6" and [r["system"] for r in out["results"]] == ["raw", "public:wan21_qwen25_3b"]
    assert out["results"][1]["metrics"]["words"] > out["results"][0]["metrics"]["words"]
    assert out["results"][0]["metrics"]["intent_recall_at_1"] == 1.0 and out["decisions"] == {}
    assert (home / "reports" / "eval-vbench-test6.json").is_file()
    assert (home / "reports" / "eval-vbench-test6.png").is_file()
    table = run(home, "eval", "--bench", "vbench", "--limit", "6", "--redteam-limit", "0", "--system", "raw").stdout
    assert "intent R@1" in table and "(cached)" in table and "Not optimised by training" in table
