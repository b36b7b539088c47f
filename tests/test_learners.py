"""Learners on the embedded SmolLM2: real TRL SFT/DPO steps with LoRA, versions registered and loadable."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from promptloop.config import Settings
from promptloop.learners.config import ConfigError, load_config
from promptloop.learners.data import NothingToTrain
from promptloop.services import Services
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import VersionStatus
from promptloop.store.repository import ensure_round

SFT_DATA = [
    ("a cat playing piano", "A fluffy orange cat sits on a wooden bench and presses the keys of a grand piano with "
     "its paws, warm lamp light, close-up, slow dolly in, cosy living room, soft film look."),
    ("fog in a pine forest", "Thick morning fog drifts between tall pine trees in a quiet forest, pale sunrise "
     "light through the branches, slow aerial push forward, muted green tones, calm and cinematic."),
    ("a red sports car on a mountain road", "A glossy red sports car speeds along a winding mountain road, golden "
     "hour light, tracking shot from a drone, rocky cliffs and valleys, crisp realistic detail."),
    ("a child flying a kite", "A young child runs across a grassy hill holding the string of a bright yellow kite, "
     "windy afternoon, wide shot, clouds moving fast, warm natural colours, joyful mood."),
]
REJECTED = ["cat piano", "The user wants a video. Here is a prompt: fog.", "car", "kite kite kite kite kite"]


def _seed(rt: Services) -> None:
    r0, r1 = ensure_round(rt.engine, 0), ensure_round(rt.engine, 1)
    with session_scope(rt.engine) as s:
        for (prompt, target), bad in zip(SFT_DATA, REJECTED, strict=True):
            p, _ = repo.add_prompt(s, prompt)
            repo.add_sft_example(s, p.id, target, round_id=r0)
            c, _ = repo.add_candidate(s, p.id, target, round_id=r1)
            r, _ = repo.add_candidate(s, p.id, bad, round_id=r1)
            repo.add_pair(s, p.id, c.id, r.id, margin=0.5, round_id=r1)


@pytest.fixture(scope="module")
def learn_rt(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path) -> Services:
    rt = Services(Settings(home=tmp_path_factory.mktemp("learn_home"), base_model=str(smollm_path), device="cpu"))
    _seed(rt)
    return rt


def _weights(folder: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def _digest(folder: str) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(Path(folder).iterdir()))).hexdigest()


def _logits(path: Path, adapter: str | None) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        return model(**tok("a cat playing piano", return_tensors="pt")).logits


def test_sft_trains_lora_and_registers_a_loadable_version(learn_rt, smollm_path, capfd, tmp_path):
    steps: list[tuple[int, int, float | None]] = []
    lrs: list[float] = []
    recipe = tmp_path / "sft.yaml"  # a TRL key promptloop does not declare: the schedule holds the rate flat
    recipe.write_text("lr_scheduler_type: constant\nlearning_rate: 1.0e-3\n")

    def on_step(step: int, total: int, logs: dict) -> None:
        steps.append((step, total, logs.get("loss")))
        lrs.append(logs.get("learning_rate"))

    res = learn_rt.train("sft", load_config("sft", recipe, max_steps=2, per_device_train_batch_size=2, round_index=0),
                         on_step=on_step)
    assert {lr for lr in lrs if lr is not None} == {1e-3}  # the default linear decay would log 5e-4 at step 2
    # progress goes to the caller's display, not as printed log dicts
    assert [s for s, _, _ in steps][-1] == 2 and {t for _, t, _ in steps} == {2} and steps[-1][2] is not None
    assert "{'loss'" not in capfd.readouterr().err
    v = res.version
    assert (v.name, v.algorithm, v.status) == ("r0-sft", "sft", VersionStatus.candidate)
    assert v.data_provenance["parent"] == "base" and v.data_provenance["rows"] == len(SFT_DATA)
    assert v.metrics["global_step"] == 2 and len(v.metrics["loss_curve"]) == 2
    w = _weights(v.adapter_path)
    lora_b = [t for k, t in w.items() if "lora_B" in k]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # LoRA B starts at zero: training moved it
    assert not any("embed_tokens" in k or "lm_head" in k for k in w)  # servable by vLLM
    assert not (Path(learn_rt.settings.adapters_dir) / ".work" / v.name).exists()
    # saved by trainer.save_model with a model card: parent, data provenance, training config, (no) evaluation
    from huggingface_hub import ModelCard

    card = ModelCard.load(Path(v.adapter_path) / "README.md")
    assert card.data.library_name == "peft" and "sft" in card.data.tags
    assert "**Parent version**: `base`" in card.text and f"| `rows` | {len(SFT_DATA)} |" in card.text
    assert "| `lr_scheduler_type` | constant |" in card.text and "| `lora_r` | 16 |" in card.text
    assert "Not evaluated yet" in card.text
    # Loadable: the adapter changes the model's output, and the rewriter can switch to it by name.
    assert (_logits(smollm_path, v.adapter_path) - _logits(smollm_path, None)).abs().max() > 1e-4
    assert learn_rt.resolve_model_version(v.name) == v.name


def _tensorboard_scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tracking_logs_eval_metrics_per_round(tmp_path):
    from promptloop.learners.tracking import TrackerUnavailable, log_metrics, trackers

    for r, total in ((0, 0.61), (1, 0.64)):
        done = log_metrics(["tensorboard"], runs_dir=tmp_path, project="promptloop", run="demo",
                           metrics={"eval/demo-r1-dpo/judge_total": total, "eval/demo-r1-dpo/n": 8, "note": "x"},
                           step=r)
        assert done == ["tensorboard"]
    scalars = _tensorboard_scalars(tmp_path / "demo")
    assert scalars == {"eval/demo-r1-dpo/judge_total": pytest.approx([0.61, 0.64]), "eval/demo-r1-dpo/n": [8.0, 8.0]}
    assert trackers("none") == [] and trackers(["tensorboard"]) == ["tensorboard"]
    with pytest.raises(TrackerUnavailable, match="report_to nosuchtracker needs the nosuchtracker package"):
        log_metrics(["nosuchtracker"], runs_dir=tmp_path, project="p", run="r", metrics={"a": 1.0}, step=0)


def test_dpo_reference_is_the_parent_and_parent_is_untouched(learn_rt):
    from promptloop.store.versions import get_version

    parent = get_version(learn_rt.engine, "r0-sft")
    before = _digest(parent.adapter_path)
    # any TRL key as a flag: the run's curves go to TensorBoard under home/runs/<version>
    res = learn_rt.train("dpo", load_config("dpo", args=["--report_to", "tensorboard"], max_steps=2,
                                            per_device_train_batch_size=2, round_index=1, parent="r0-sft",
                                            learning_rate=1e-3))
    v = res.version
    scalars = _tensorboard_scalars(learn_rt.settings.runs_dir / v.name)
    assert len(scalars["train/loss"]) == 2 and len(scalars["train/rewards/margins"]) == 2
    assert scalars["train/loss"][0] == pytest.approx(v.metrics["loss_curve"][0][1], abs=1e-4)
    assert (v.name, v.algorithm, v.parent_id) == ("r1-dpo", "dpo", parent.id)
    assert v.data_provenance["rows"] == len(SFT_DATA) and v.data_provenance["mean_margin"] == 0.5
    # At step 1 the policy equals its reference, so the sigmoid DPO loss is exactly ln 2: the reference is the
    # parent adapter (against the base model the first loss would differ).
    assert math.isclose(v.metrics["loss_curve"][0][1], math.log(2), abs_tol=1e-3)
    new, old = _weights(v.adapter_path), _weights(parent.adapter_path)
    assert set(new) == set(old)  # only the trained adapter is saved, not TRL's 'ref' copy
    assert any(not torch.equal(new[k], old[k]) for k in new)
    assert _digest(parent.adapter_path) == before  # earlier versions are never modified


def test_dpo_reference_can_be_the_anchor_sft_version(learn_rt):
    """RLHFlow's iterative DPO: a DPO chain's reference stays the SFT version it started from."""
    from promptloop.store.versions import anchor, get_version

    dpo1, sft = get_version(learn_rt.engine, "r1-dpo"), get_version(learn_rt.engine, "r0-sft")
    assert anchor(learn_rt.engine, dpo1).name == "r0-sft" and anchor(learn_rt.engine, sft).name == "r0-sft"
    assert anchor(learn_rt.engine, get_version(learn_rt.engine, "base")) is None
    res = learn_rt.train("dpo", load_config("dpo", max_steps=1, per_device_train_batch_size=2, round_index=1,
                                               parent="r1-dpo", reference="anchor", name="r1-dpo-anchor"))
    assert res.version.metrics["reference"] == {"kind": "anchor", "version": "r0-sft", "precomputed": False}
    # the policy starts at r1-dpo but is compared with r0-sft: the first loss is no longer exactly ln 2
    assert abs(res.version.metrics["loss_curve"][0][1] - math.log(2)) > 1e-3
    assert get_version(learn_rt.engine, "r1-dpo").metrics["reference"] == {"kind": "parent", "version": "r0-sft",
                                                                          "precomputed": False}
    with pytest.raises(ConfigError, match="reference must be"):
        load_config("dpo", reference="grandparent")


@pytest.mark.slow  # two 4-step DPO runs (~40 s): with the slow set in make test-all / CI
def test_precomputed_reference_gives_the_same_dpo_run(learn_rt):
    """TRL's reference log-probs computed once up front train exactly what a reference forward per step trains."""
    # the parent: reused when the module's SFT test made it, trained here when the slow set runs alone
    learn_rt.train("sft", load_config("sft", name="r0-sft", max_steps=1, round_index=0))
    common = dict(max_steps=4, per_device_train_batch_size=2, round_index=1, parent="r0-sft", learning_rate=1e-3)
    runs = {flag: learn_rt.train("dpo", load_config("dpo", **common, precompute_ref_log_probs=flag,
                                                        name=f"r1-dpo-pre-{flag}")).version
            for flag in (False, True)}
    assert runs[True].metrics["reference"]["precomputed"] is True
    assert runs[False].metrics["reference"]["precomputed"] is False
    curves = {flag: [loss for _, loss in v.metrics["loss_curve"]] for flag, v in runs.items()}
    assert math.isclose(curves[True][0], math.log(2), abs_tol=1e-3)  # the reference is still the parent
    assert curves[True] == pytest.approx(curves[False], abs=2e-3)
    new, old = _weights(runs[True].adapter_path), _weights(runs[False].adapter_path)
    assert max((new[k] - old[k]).abs().max().item() for k in new) < 1e-3


def test_precompute_auto_only_when_pairs_are_seen_more_than_once():
    # 4 steps x batch 2 over 4 pairs: two passes, so each precomputed log-prob is used twice
    assert load_config("dpo", max_steps=4, per_device_train_batch_size=2).precompute_reference(4)
    # one pass (or less) costs the same reference forwards up front as in the steps: not worth it
    assert not load_config("dpo", max_steps=2, per_device_train_batch_size=2).precompute_reference(4)
    assert not load_config("dpo", max_steps=3, per_device_train_batch_size=2).precompute_reference(12)
    assert load_config("dpo", num_train_epochs=2).precompute_reference(1000)
    assert not load_config("dpo", num_train_epochs=1).precompute_reference(1000)
    # the anchor's weights are swapped in after TRL built the trainer, so its reference is never precomputed
    assert not load_config("dpo", num_train_epochs=2, reference="anchor", precompute_ref_log_probs=True
                                ).precompute_reference(1000)
    assert load_config("dpo", max_steps=1, precompute_ref_log_probs=True).precompute_reference(1000)
    with pytest.raises(ConfigError, match="precompute_ref_log_probs must be true or false"):
        load_config("dpo", precompute_ref_log_probs="sometimes")
    with pytest.raises(ConfigError, match="precompute_ref_log_probs"):
        load_config("dpo", args=["--precompute_ref_log_probs", "sometimes"])
    assert load_config("sft").model.lora_dropout == 0.0  # no dropout masks drawn per step (bench/train_step.py)


def test_same_name_is_not_trained_twice_and_auto_names_increment(learn_rt):

    again = learn_rt.train("sft", load_config("sft", name="r0-sft", max_steps=1, round_index=0))
    assert again.reused and again.version.name == "r0-sft"
    nxt = learn_rt.train("sft", load_config("sft", max_steps=1, round_index=0, per_device_train_batch_size=4))
    assert nxt.version.name == "r0-sft-2" and not nxt.reused


def test_recipes_are_trl_configs_any_trl_key_works_and_errors_name_the_key(tmp_path):
    f = tmp_path / "dpo.yaml"
    f.write_text("beta: 0.3\nlearning_rate: 1.0e-5\nmax_steps: 7\nlr_scheduler_type: cosine\noptim: adafactor\n"
                 "lora_r: 8\nreference: anchor\nenv:\n  PROMPTLOOP_TEST_RECIPE_ENV: 'on'\n")
    # defaults < recipe < keyword overrides < --key value flags (TRL's spelling or with dashes)
    cfg = load_config("dpo", f, args=["--max-steps", "4", "--weight_decay", "0.01"], max_steps=3, parent=None)
    assert (cfg.value("beta"), cfg.value("learning_rate"), cfg.value("max_steps"), cfg.run.parent, cfg.reference) == (
        0.3, 1e-5, 4, "champion", "anchor")
    assert os.environ.pop("PROMPTLOOP_TEST_RECIPE_ENV") == "on"  # TrlParser's env block
    args = cfg.training_args(tmp_path / "out", cuda=False)
    assert type(args).__name__ == "DPOConfig"
    assert (args.lr_scheduler_type.value, args.optim.value, args.weight_decay, args.bf16, args.use_cpu) == (
        "cosine", "adafactor", 0.01, False, True)
    assert cfg.lora_config().r == 8 and cfg.to_dict()["lr_scheduler_type"] == "cosine"
    # promptloop's defaults over TRL's: no 1e-6 DPO learning rate, no gradient checkpointing, nothing reported
    sft = load_config("sft")
    sft_args = sft.training_args(tmp_path / "o", cuda=False)
    assert (sft_args.learning_rate, sft_args.gradient_checkpointing, sft_args.report_to) == (2e-4, False, [])
    assert sft_args.completion_only_loss is True
    f.write_text("betta: 0.3\n")
    with pytest.raises(ConfigError, match="unknown dpo setting.*betta"):
        load_config("dpo", f)
    with pytest.raises(ConfigError, match="unknown dpo flag.*--betta"):
        load_config("dpo", args=["--betta", "1"])
    with pytest.raises(ConfigError, match="invalid int value: 'x'"):
        load_config("sft", args=["--max_steps", "x"])
    with pytest.raises(ConfigError, match="lr_scheduler_type must be one of"):
        load_config("sft", lr_scheduler_type="sideways")
    with pytest.raises(ConfigError, match="learning_rate must be a number"):
        load_config("sft", learning_rate="fast")
    with pytest.raises(ConfigError, match="beta must be positive"):
        load_config("dpo", beta=0)
    with pytest.raises(ConfigError, match="use_peft must stay true"):
        load_config("sft", use_peft=False)
    with pytest.raises(ConfigError, match="not found"):
        load_config("sft", tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown algorithm"):
        load_config("ppo")


def test_nothing_to_train_names_the_round(settings, smollm_path):

    from sqlmodel import Session, func, select

    from promptloop.store.models import ModelVersion

    rt = Services(settings.model_copy(update={"base_model": str(smollm_path)}))
    with pytest.raises(NothingToTrain, match="collect sft"):
        rt.train("sft", load_config("sft", max_steps=1))
    with pytest.raises(NothingToTrain, match="collect pairs"):
        rt.train("dpo", load_config("dpo", max_steps=1, reference="anchor"))
    with Session(rt.engine) as s:  # checked first, nothing written: not even the base version
        assert s.exec(select(func.count()).select_from(ModelVersion)).one() == 0
    ensure_round(rt.engine, 3)
    with pytest.raises(NothingToTrain, match="round 3"):
        rt.train("sft", load_config("sft", max_steps=1, round_index=3))
    from promptloop.learners.trainer import LearnerSetupError

    with pytest.raises(LearnerSetupError, match="QLoRA\\) needs a CUDA GPU"):  # said before anything loads
        rt.train("sft", load_config("sft", max_steps=1, load_in_4bit=True))


def test_the_demo_dpo_recipe_is_the_dpo_recipe_at_batch_2():
    """`make run` trains DPO with demo_dpo.yaml: only the batch differs from the shipped recipe."""
    recipes = Path(__file__).resolve().parents[1] / "learners" / "recipes"
    demo, full = load_config("dpo", recipes / "demo_dpo.yaml"), load_config("dpo", recipes / "dpo.yaml")
    assert demo.value("per_device_train_batch_size") == 2 and full.value("per_device_train_batch_size") == 4
    assert {k: v for k, v in demo.to_dict().items() if k != "per_device_train_batch_size"} == {
        k: v for k, v in full.to_dict().items() if k != "per_device_train_batch_size"}


def test_the_policy_loads_with_the_recipes_attention_kernel(smollm_path, tmp_path):
    """ModelConfig's attn_implementation (a recipe key or --attn_implementation flag) reaches from_pretrained;
    unset, transformers picks (sdpa)."""
    from promptloop.learners.trainer import load_policy
    from promptloop.store.models import ModelVersion

    settings = Settings(home=tmp_path / "home", base_model=str(smollm_path))
    base = ModelVersion(name="base", base_model=str(smollm_path))
    eager, _, _ = load_policy(settings, base, load_config("dpo", args=["--attn_implementation", "eager"]))
    default, _, lora = load_policy(settings, base, load_config("dpo"))
    assert eager.config._attn_implementation == "eager"
    assert default.config._attn_implementation == "sdpa"
    assert lora is not None and lora.r == load_config("dpo").model.lora_r
