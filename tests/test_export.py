"""Export to TRL's conversational formats, loaded back by datasets and accepted by TRL trainers."""

import copy
from pathlib import Path

import pytest

from promptloop.agents.rewriter import Rewriter
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.exporter import export

BUILD = Rewriter(model=None).messages_for  # template only; no model needed


@pytest.fixture
def filled(engine):
    return _fill(engine)


def _fill(engine):
    with session_scope(engine) as s:
        for i, (user, good, bad) in enumerate([
            ("a cat playing piano", "A ginger cat presses the keys of a grand piano, warm lamp light, close-up.",
             "A dog running."),
            ("rain on a window", "Raindrops race down a window pane at dusk, city lights blurred behind, slow push in.",
             "Sunny beach."),
        ]):
            p, _ = repo.add_prompt(s, user)
            c_good, _ = repo.add_candidate(s, p.id, good)
            c_bad, _ = repo.add_candidate(s, p.id, bad)
            repo.add_sft_example(s, p.id, good, candidate_id=c_good.id)
            repo.add_sft_example(s, p.id, bad, status="rejected", reason="drops the subject")
            repo.add_pair(s, p.id, c_good.id, c_bad.id, margin=0.5 + i)
    return engine


def test_sft_and_dpo_jsonl_load_with_datasets(filled, tmp_path: Path):
    from datasets import load_dataset

    assert export(filled, "sft", tmp_path / "sft.jsonl", BUILD) == 2  # the rejected example is not exported
    assert export(filled, "dpo", tmp_path / "dpo.jsonl", BUILD) == 2
    sft = load_dataset("json", data_files=str(tmp_path / "sft.jsonl"), split="train")
    roles = [m["role"] for m in sft[0]["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert "a cat playing piano" in sft[0]["messages"][1]["content"]
    assert sft[0]["messages"][2]["content"].startswith("A ginger cat")
    dpo = load_dataset("json", data_files=str(tmp_path / "dpo.jsonl"), split="train")
    assert set(["prompt", "chosen", "rejected"]) <= set(dpo.column_names)
    assert dpo[1]["chosen"][0]["role"] == "assistant" and dpo[1]["rejected"][0]["content"] == "Sunny beach."
    assert dpo[1]["margin"] == 1.5


def test_hf_format_is_a_hub_dataset_folder_with_a_card(filled, engine, tmp_path: Path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    assert export(filled, "dpo", tmp_path / "dpo_hf", BUILD, fmt="hf") == 2
    ds = load_dataset(str(tmp_path / "dpo_hf"))  # what `trl dpo --dataset_name FOLDER` calls
    assert list(ds) == ["train"] and ds["train"].num_rows == 2 and ds["train"][1]["margin"] == 1.5
    card = DatasetCard.load(tmp_path / "dpo_hf" / "README.md")
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert "dpo" in card.data.tags and "2 rows of conversational preference pairs" in card.text
    assert "trl dpo --model_name_or_path" in card.text and "Rows per pair rule: margin 2" in card.text
    with pytest.raises(ValueError, match="no sft data in the store for round 7"):
        export(engine, "sft", tmp_path / "x.jsonl", BUILD, round_id=7)
    assert not (tmp_path / "x.jsonl").exists()


def _tiny_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(cfg)


def test_trl_cli_trains_two_steps_on_the_export(tmp_path: Path, smollm_path: Path):
    """TRL's own command line (`trl dpo`) trains on `data export --format hf` as it is, nothing converted."""
    import os
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from promptloop.store.engine import make_engine
    from promptloop.store.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")  # one store is enough: TRL reads the files
    upgrade(engine)
    filled = _fill(engine)

    export(filled, "dpo", tmp_path / "pairs", BUILD, fmt="hf")
    tok = AutoTokenizer.from_pretrained(smollm_path)
    _tiny_model(tok).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    trl = Path(sys.executable).parent / "trl"
    proc = subprocess.run(
        [str(trl), "dpo", "--model_name_or_path", str(tmp_path / "tiny"), "--dataset_name", str(tmp_path / "pairs"),
         "--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--per_device_train_batch_size", "1",
         "--learning_rate", "1e-3", "--use_cpu", "--bf16", "false", "--report_to", "none", "--save_strategy", "no",
         "--logging_steps", "1", "--max_length", "256", "--use_peft", "--lora_target_modules", "q_proj", "v_proj"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "Training completed" in log and log.count("'loss':") == 2  # two logged optimizer steps
    assert (tmp_path / "out" / "adapter_config.json").is_file()  # and the LoRA adapter it saved


@pytest.mark.slow
def test_trl_trainers_accept_the_export(filled, tmp_path: Path, smollm_path: Path):
    """One real optimisation step each of TRL's SFTTrainer and DPOTrainer on the exported files."""
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    export(filled, "sft", tmp_path / "sft.jsonl", BUILD)
    export(filled, "dpo", tmp_path / "dpo.jsonl", BUILD)
    tok = AutoTokenizer.from_pretrained(smollm_path)
    common = dict(max_steps=1, per_device_train_batch_size=2, learning_rate=1e-3, bf16=False, use_cpu=True,
                  report_to="none", save_strategy="no", logging_steps=1, gradient_checkpointing=False,
                  max_length=256)
    sft = load_dataset("json", data_files=str(tmp_path / "sft.jsonl"), split="train")
    t = SFTTrainer(model=_tiny_model(tok), args=SFTConfig(output_dir=str(tmp_path / "o1"), **common),
                   train_dataset=sft, processing_class=tok)
    res = t.train()
    assert res.global_step == 1 and res.training_loss > 0
    dpo = load_dataset("json", data_files=str(tmp_path / "dpo.jsonl"), split="train")
    policy = _tiny_model(tok)
    t = DPOTrainer(model=policy, ref_model=copy.deepcopy(policy), train_dataset=dpo, processing_class=tok,
                   args=DPOConfig(output_dir=str(tmp_path / "o2"), beta=0.1, **common))
    res = t.train()
    assert res.global_step == 1
    logged = [h for h in t.state.log_history if "loss" in h]
    assert logged and abs(logged[0]["loss"] - 0.6931) < 0.05  # DPO starts at log(2) with policy == reference
