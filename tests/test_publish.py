"""Model and dataset cards, `promptloop push` (dry run, local folder, and the errors before any upload),
`config show`, `--version` and the `--dry-run` of train / collect / loop run: through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import invoke_cli

from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.migrate import open_store


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store with a trained-looking version (adapter folder, training metrics) and one evaluation of it."""
    home = tmp_path / "plhome"
    monkeypatch.setenv("PROMPTLOOP_HOME", str(home))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert invoke_cli("init", "--no-models")[0] == 0
    adapter = home / "adapters" / "r0-sft"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    (adapter / ".partial").write_text("hidden files never go up")
    engine = open_store(f"sqlite:///{home / 'promptloop.db'}")
    with session_scope(engine) as s:
        base, _ = repo.get_or_create_version(s, "base", base_model="smollm2-135m-instruct", status="champion")
        v, _ = repo.get_or_create_version(
            s, "r0-sft", base_model="smollm2-135m-instruct", parent_id=base.id, algorithm="sft",
            adapter_path=str(adapter), metrics={"global_step": 3, "first_loss": 1.9, "last_loss": 1.2,
                                                "config": {"learning_rate": 2e-4, "lr_scheduler_type": "cosine"}},
            data_provenance={"rows": 12, "round": 0})
        repo.add_evaluation(s, "r0-sft", "eval", ["a cat"] * 16, "k1", model_version_id=v.id,
                            metrics={"judge_total": 0.6123, "intent_recall_at_1": 0.75, "repetition": 0.02})
    return home


def test_push_dry_run_and_local_folder_carry_the_model_card(home: Path, tmp_path: Path):
    from huggingface_hub import ModelCard

    code, out, err = invoke_cli("push", "r0-sft", "--repo", "me/promptloop-r0", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert (plan["kind"], plan["repo"], plan["uploaded"]) == ("model", "me/promptloop-r0", False)
    assert [f["path"] for f in plan["files"]] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    code, out, err = invoke_cli("push", "r0-sft", "--repo", "me/promptloop-r0", "--local-dir", str(tmp_path / "hub"))
    assert code == 0, err
    card = ModelCard.load(tmp_path / "hub" / "me" / "promptloop-r0" / "README.md")
    # the Hub metadata names the base model's Hub id; the text: parent, data, eval table, training config
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.library_name == "peft"
    assert "**Parent version**: `base`" in card.text and "| `rows` | 12 |" in card.text
    assert "| eval | 16 | 0.612 | 0.750 | 0.020 |" in card.text  # judge total, intent R@1, repetition
    assert "| `lr_scheduler_type` | cosine |" in card.text and "| `last_loss` | 1.200 |" in card.text
    assert not (tmp_path / "hub" / "me" / "promptloop-r0" / ".partial").exists()


def test_push_errors_come_before_any_upload(home: Path, monkeypatch: pytest.MonkeyPatch):
    code, _, err = invoke_cli("push", "r0-sft", "--repo", "me/promptloop-r0")
    assert code == 2 and "no Hugging Face write token is configured (HF_TOKEN, or hub.token in settings)" in err
    code, _, err = invoke_cli("push", "r0-sft", "--repo", "not a repo!")
    assert code == 2 and "bad Hub repository id 'not a repo!'" in err
    code, _, err = invoke_cli("push", "r9-dpo", "--repo", "me/x", "--dry-run")
    assert code == 2 and "nothing to push under 'r9-dpo'" in err
    code, _, err = invoke_cli("push", "base", "--repo", "me/x", "--dry-run")
    assert code == 2 and "has no adapter folder" in err
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")  # a token, but the Hub is out of reach (offline)
    code, _, err = invoke_cli("push", "r0-sft", "--repo", "me/promptloop-r0")
    assert code == 2 and "push to me/promptloop-r0 failed" in err and "hf_not_a_real_token" not in err
    assert len(err.strip().splitlines()) == 1


def test_push_a_dataset_export(home: Path, tmp_path: Path):
    engine = open_store(f"sqlite:///{home / 'promptloop.db'}")
    with session_scope(engine) as s:
        p, _ = repo.add_prompt(s, "a cat playing piano")
        good, _ = repo.add_candidate(s, p.id, "A ginger cat presses the keys of a grand piano, warm lamp light.")
        bad, _ = repo.add_candidate(s, p.id, "A dog.")
        repo.add_pair(s, p.id, good.id, bad.id, margin=0.4)
    assert invoke_cli("data", "export", "dpo", str(tmp_path / "pairs"), "--format", "hf")[0] == 0
    code, out, err = invoke_cli("push", str(tmp_path / "pairs"), "--repo", "me/pairs", "--local-dir",
                                str(tmp_path / "hub"), "--json")
    assert code == 0, err
    assert json.loads(out)["kind"] == "dataset"
    pushed = tmp_path / "hub" / "me" / "pairs"
    assert (pushed / "README.md").is_file() and (pushed / "data" / "train-00000-of-00001.parquet").is_file()
    code, _, err = invoke_cli("push", str(tmp_path), "--repo", "me/x", "--dry-run")
    assert code == 2 and "neither an adapter folder" in err


def test_config_show_names_each_settings_source(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    toml = tmp_path / "promptloop.toml"
    toml.write_text("[collect]\nchunk_size = 32\n")
    monkeypatch.setenv("PROMPTLOOP_GUARD__FLAG_THRESHOLD", "0.5")
    monkeypatch.setenv("PROMPTLOOP_HUB__TOKEN", "hf_secret_value")
    code, out, err = invoke_cli("--config", str(toml), "--set", "generation.n=2", "config", "show", "--json")
    assert code == 0, err
    rows = {r["key"]: (r["value"], r["source"]) for r in json.loads(out)}
    assert rows["generation.n"] == (2, "flag") and rows["guard.flag_threshold"] == (0.5, "env")
    assert rows["collect.chunk_size"] == (32, f"file {toml}") and rows["collect.part_size"][1] == "default"
    assert rows["hub.token"] == ("**********", "env") and "hf_secret_value" not in out
    code, out, err = invoke_cli("config", "show", "guard", "--json")
    assert code == 0 and {r["key"].split(".")[0] for r in json.loads(out)} == {"guard"}
    code, _, err = invoke_cli("config", "show", "gaurd")
    assert code == 2 and "no setting 'gaurd'" in err


def test_version_flag():
    from promptloop import __version__

    code, out, _ = invoke_cli("--version")
    assert code == 0 and out.startswith(f"promptloop {__version__} (") and "transformers " in out


def test_dry_runs_print_the_plan_and_run_nothing(home: Path):
    from sqlmodel import Session, func, select

    from promptloop.store.models import ModelVersion, SFTExample

    engine = open_store(f"sqlite:///{home / 'promptloop.db'}")
    round_id = repo.ensure_round(engine, 0)
    with session_scope(engine) as s:
        p, _ = repo.add_prompt(s, "a lighthouse in a storm")
        repo.add_sft_example(s, p.id, "A lighthouse on a cliff, waves crashing, night storm, slow push in.",
                             round_id=round_id)
    code, out, err = invoke_cli("train", "sft", "--dry-run", "--json", "--parent", "base", "--max-steps", "5",
                                "--lr_scheduler_type", "cosine")
    assert code == 0, err
    plan = json.loads(out)
    assert (plan["name"], plan["parent"], plan["rows"], plan["steps"]) == ("r0-sft-2", "base", 1, 5)  # r0-sft exists
    assert plan["config"]["lr_scheduler_type"] == "cosine"
    code, _, err = invoke_cli("train", "sft", "--dry-run", "--optim", "sideways")
    assert code == 2 and "invalid choice: 'sideways'" in err
    code, _, err = invoke_cli("collect", "sft", "--split", "eval", "--limit", "3", "--dry-run")
    assert code == 0 and "would collect sft for round 0 on 3 eval prompts" in err
    code, out, err = invoke_cli("loop", "run", "--dry-run", "--json", "--rounds", "3", "--schedule", "sft,dpo")
    assert code == 0, err
    rounds = json.loads(out)["rounds"]
    assert [(r["round"], r["collect"], r["train"]) for r in rounds] == [(0, "sft", "sft"), (1, "pairs", "dpo"),
                                                                         (2, "pairs", "dpo")]
    with Session(engine) as s:  # nothing trained, collected or registered
        assert s.exec(select(func.count()).select_from(ModelVersion)).one() == 2
        assert s.exec(select(func.count()).select_from(SFTExample)).one() == 1
