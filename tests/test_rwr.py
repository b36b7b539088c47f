"""Reward-weighted LoRA fine-tuning of the tiny CogVideoX pipeline (LiFT's objective), end to end on CPU."""

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from helpers import RATED_PROMPTS as PROMPTS
from helpers import rate_tiny_videos
from sqlmodel import Session, select

from promptloop.agents.renderer import RenderRequest
from promptloop.agents.video.diffusers_renderer import DiffusersRenderer
from promptloop.agents.video.tiny import build_tiny_cogvideox
from promptloop.config import Settings
from promptloop.errors import PromptloopError
from promptloop.learners.rwr import RewardWeightedTrainer, RWRConfig, rewarded_videos, run_rwr, sample_weights
from promptloop.services import Services
from promptloop.store.models import ModelVersion


def test_weights_favour_high_rewards():
    r = np.array([0.1, 0.5, 0.8, 1.0])
    lift = sample_weights(r, "lift")
    assert lift.tolist() == [0.05, 0.2, 0.9, 0.9]  # LiFT's Bad / Normal / Good label weights
    for scheme in ("normalized", "exp"):
        w = sample_weights(r, scheme, temperature=0.2)
        assert np.all(np.diff(w) > 0) and w.mean() == pytest.approx(1.0)
    assert sample_weights(r, "exp", temperature=0.05)[-1] > sample_weights(r, "exp", temperature=0.5)[-1]
    with pytest.raises(PromptloopError, match="unknown weighting"):
        RWRConfig(weighting="softmax")


@pytest.fixture
def rated_tiny(tmp_path):
    rt = Services(Settings(home=tmp_path / "home", device="cpu"))
    rate_tiny_videos(rt, PROMPTS)
    return rt


def test_training_changes_the_lora_weights_more_for_high_rewards_and_loads_back(rated_tiny):
    rt = rated_tiny
    data = rewarded_videos(rt.engine, "ratings")
    assert [d.prompt for d in data] == PROMPTS and [d.reward for d in data] == [1.0, 0.0, 0.75, 0.25]
    pipe = build_tiny_cogvideox()
    cfg = RWRConfig(steps=30, learning_rate=5e-3, batch_size=2, weighting="lift")
    trainer = RewardWeightedTrainer(pipe, data, cfg)
    assert trainer.weights.tolist() == pytest.approx([0.9, 0.05, 0.9, 0.05])
    lora_b = [p for n, p in pipe.transformer.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.abs().sum()) == 0 for p in lora_b)  # LoRA starts as the base model
    base = {n: p.detach().clone() for n, p in pipe.transformer.named_parameters() if "lora" not in n}
    gen = torch.Generator().manual_seed(5)
    per_before = trainer.per_sample_loss([0, 1, 2, 3], gen).detach()

    metrics = trainer.train()
    assert any(float(p.abs().sum()) > 0 for p in lora_b)
    assert all(torch.equal(p, base[n]) for n, p in pipe.transformer.named_parameters() if "lora" not in n)
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    # the weighted objective improves the high-reward samples more than the low-reward ones
    per_after = trainer.per_sample_loss([0, 1, 2, 3], torch.Generator().manual_seed(5)).detach()
    gain = (per_before - per_after) / per_before
    assert gain[[0, 2]].mean() > gain[[1, 3]].mean()

    out = trainer.save(rt.settings.home / "video_loras" / "t")
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    base_r = DiffusersRenderer("tiny", out_dir=rt.settings.home / "v1", progress=False)
    tuned = DiffusersRenderer("tiny", out_dir=rt.settings.home / "v2", progress=False, lora=out)
    a, b = (r.render(RenderRequest(prompt=PROMPTS[0], seed=0)) for r in (base_r, tuned))
    assert a.status == b.status == "ok" and tuned.model_id == "tiny-random-cogvideox+lora:t"
    fa, fb = np.stack(imageio.mimread(a.path)), np.stack(imageio.mimread(b.path))
    assert fa.shape == fb.shape and np.abs(fa.astype(int) - fb.astype(int)).mean() > 0.5


def test_run_rwr_registers_a_version_the_renderer_can_use(rated_tiny):
    rt = rated_tiny
    res = run_rwr(rt.engine, rt.settings, rt.renderer(), RWRConfig(name="rwr-test", steps=3, weighting="normalized"))
    assert res["steps"] == 3 and len(res["loss_curve"]) == 3
    with Session(rt.engine) as s:
        v = s.exec(select(ModelVersion).where(ModelVersion.name == "rwr-test")).one()
        assert v.algorithm == "rwr" and v.base_model == "tiny-random-cogvideox"
        assert v.data_provenance["weighting"] == "normalized" and len(v.data_provenance["video_ids"]) == 4
    # the shared pipeline is the base model again, and a second run in the same process works
    assert not getattr(rt.renderer().pipeline.transformer, "peft_config", None)
    assert run_rwr(rt.engine, rt.settings, rt.renderer(), RWRConfig(name="rwr-again", steps=1))["steps"] == 1
    rt.settings.video.lora = "rwr-test"
    assert rt.renderer().model_id == "tiny-random-cogvideox+lora:rwr-test"
    with pytest.raises(PromptloopError, match="never overwritten"):
        run_rwr(rt.engine, rt.settings, rt.renderer(), RWRConfig(name="rwr-test", steps=1))


def _lora(out) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "pytorch_lora_weights.safetensors"))


def test_accumulation_clipping_and_a_killed_run_resumes_to_the_same_lora(rated_tiny):
    """diffusers' training conventions on accelerate: micro-batches per optimizer step, clipped gradient norms,
    and a run killed after its step-2 checkpoint that, started again, ends with the uninterrupted run's LoRA."""
    rt = rated_tiny
    cfg = dict(steps=4, batch_size=2, gradient_accumulation_steps=2, max_grad_norm=0.5, learning_rate=5e-3,
               checkpointing_steps=2, weighting="lift")
    whole = run_rwr(rt.engine, rt.settings, rt.renderer(), RWRConfig(name="rwr-whole", **cfg))
    assert (whole["steps"], whole["micro_batches"], len(whole["loss_curve"])) == (4, 8, 4)
    assert len(whole["grad_norms"]) == 4 and all(n > 0 for n in whole["grad_norms"])  # one clip per step
    assert whole["resumed_from_step"] == 0 and whole["processes"] == 1 and whole["mixed_precision"] == "no"
    assert not (rt.settings.home / "video_loras" / ".work" / "rwr-whole").exists()  # cleaned up when done

    class Killed(Exception):
        pass

    def kill_at_3(step: int, total: int, loss: float) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        run_rwr(rt.engine, rt.settings, rt.renderer(), RWRConfig(name="rwr-killed", **cfg), on_step=kill_at_3)
    work = rt.settings.home / "video_loras" / ".work" / "rwr-killed"
    assert sorted(p.name for p in work.iterdir()) == ["checkpoint-2"]
    assert (work / "checkpoint-2" / "pytorch_lora_weights.safetensors").is_file()  # the LoRA, not the model
    assert not list((work / "checkpoint-2").glob("model*.safetensors"))
    resumed = run_rwr(rt.engine, rt.settings, rt.renderer(), RWRConfig(name="rwr-killed", **cfg))
    assert resumed["resumed_from_step"] == 2 and resumed["micro_batches"] == 4
    assert resumed["loss_curve"] == pytest.approx(whole["loss_curve"], abs=1e-5)
    a = _lora(rt.settings.home / "video_loras" / "rwr-whole")
    b = _lora(rt.settings.home / "video_loras" / "rwr-killed")
    assert set(a) == set(b) and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
