"""The learned critic on an honest synthetic signal: people's scores follow measurable properties of the videos."""

import numpy as np
import pytest
from sqlmodel import Session, select

from promptloop.agents.video.media import write_mp4
from promptloop.config import Settings
from promptloop.errors import PromptloopError
from promptloop.learners.video_critic import (
    CriticConfig,
    VideoCritic,
    pairwise_accuracy,
    run_critic,
    spearman,
)
from promptloop.services import Services
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import HumanRating, ModelVersion

HELD_OUT_PEARSON = 0.7  # the stated bar: held-out correlation with the (noisy) human means


def clip(noise: float, jitter: float, seed: int) -> np.ndarray:
    """A bright square gliding right; Gaussian pixel noise (hurts fidelity) and positional jitter (hurts motion)."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(13):
        f = np.full((64, 96, 3), 50.0)
        x = int(8 + 4 * t + rng.uniform(-jitter, jitter))
        f[20:44, max(0, x):x + 20] = (230, 210, 80)
        frames.append(np.clip(f + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8))
    return np.stack(frames)


@pytest.fixture
def rated_store(tmp_path, embedder):
    rt = Services(Settings(home=tmp_path / "home", device="cpu"))
    rt.__dict__["embedder"] = embedder
    rng = np.random.default_rng(7)
    truth = {}
    with session_scope(rt.engine) as s:
        p, _ = repo.add_prompt(s, "a yellow block sliding to the right")
        for i in range(60):
            noise, jitter = rng.uniform(0, 45), rng.uniform(0, 9)
            c, _ = repo.add_candidate(s, p.id, f"rewrite {i}")
            path = write_mp4(clip(noise, jitter, i), tmp_path / "v" / f"{i}.mp4", fps=8)
            v, _ = repo.add_video(s, f"synthetic-{i}", renderer="synthetic", model="synthetic", seed=i,
                                  path=str(path), candidate_id=c.id)
            truth[v.id] = {"video_fidelity": 5 - 4 * noise / 45, "motion_smoothness": 5 - 4 * jitter / 9}
            for rater in ("ana", "bo"):
                for dim, value in truth[v.id].items():
                    s.add(HumanRating(video_id=v.id, rater=rater, dimension=dim, rationale="synthetic",
                                      score=float(np.clip(value + rng.normal(0, 0.3), 1, 5))))
    return rt, truth


def test_critic_learns_the_signal_and_judges_with_it(rated_store):
    rt, truth = rated_store
    rep = run_critic(rt.engine, rt.settings, embedder=rt.embedder, cfg=CriticConfig(name="critic-test", holdout=0.3), progress=False)
    assert set(rep.dimensions) == {"motion_smoothness", "video_fidelity"}  # nobody rated semantic consistency
    assert rep.heldout_videos == 18 and rep.train_videos == 42
    for dim in ("video_fidelity", "motion_smoothness"):
        m = rep.metrics["dimensions"][dim]
        assert m["pearson"] > HELD_OUT_PEARSON and m["spearman"] > HELD_OUT_PEARSON - 0.1, (dim, m)
        assert m["pairwise_accuracy"] > 0.75, (dim, m)
    with Session(rt.engine) as s:
        row = s.exec(select(ModelVersion).where(ModelVersion.name == "critic-test")).one()
        assert row.algorithm == "critic" and row.metrics["dimensions"]["video_fidelity"]["pearson"] > 0.7
    with pytest.raises(PromptloopError, match="not a rewriter version"):
        rt.resolve_model_version("critic-test")

    # the critic as reward-judge dimensions: a clean clip scores above a noisy, jittery one
    rt.settings.video.critic = "critic-test"
    rt.settings.video.nsfw = False
    scorer = rt.video_scorer
    clean = scorer.score_frames(clip(2, 0.5, 100), "a yellow block sliding to the right")
    dirty = scorer.score_frames(clip(40, 8, 101), "a yellow block sliding to the right")
    for dim in ("critic_video_fidelity", "critic_motion_smoothness"):
        assert 0 <= dirty.dimensions[dim] < clean.dimensions[dim] <= 1
    assert "critic_semantic_consistency" not in clean.dimensions
    from promptloop.agents.judge import weighted_total

    _, used = weighted_total(clean.dimensions, rt.settings.video.weights)
    assert used["critic_video_fidelity"] == 0.15 and "critic_semantic_consistency" not in used


def test_spearman_gives_tied_ratings_their_average_rank():
    from scipy.stats import spearmanr

    # mean 1-5 ratings of 8 videos: three ties
    people = np.array([3.0, 4.5, 3.0, 2.0, 4.5, 1.0, 3.0, 5.0])
    critic = np.array([2.9, 4.1, 3.4, 2.2, 4.4, 1.5, 2.7, 4.0])
    rho = spearman(critic, people)
    assert rho == round(float(spearmanr(critic, people).statistic), 4)
    # hand-computed with average ranks: people's ranks [4, 6.5, 4, 2, 6.5, 1, 4, 8]
    ranks_p = np.array([4, 6.5, 4, 2, 6.5, 1, 4, 8])
    ranks_c = critic.argsort().argsort() + 1.0
    assert rho == pytest.approx(float(np.corrcoef(ranks_c, ranks_p)[0, 1]), abs=1e-4)
    # arbitrary ranks for the ties (argsort order) would give another number
    assert abs(rho - float(np.corrcoef(ranks_c, people.argsort(kind="stable").argsort())[0, 1])) > 0.01
    assert spearman(critic[:2], people[:2]) is None and spearman(critic, np.full(8, 3.0)) is None


def test_critic_needs_enough_ratings_and_loads_only_what_it_saved(tmp_path, embedder):
    rt = Services(Settings(home=tmp_path / "home", device="cpu"))
    rt.__dict__["embedder"] = embedder
    with pytest.raises(PromptloopError, match="ratings on at least 8 videos, the store has 0"):
        run_critic(rt.engine, rt.settings, embedder=rt.embedder, cfg=CriticConfig(), progress=False)
    with pytest.raises(PromptloopError, match="no trained critic"):
        VideoCritic(tmp_path)
    assert pairwise_accuracy(np.array([1, 2, 3.0]), np.array([1, 3, 2.0])) == pytest.approx(2 / 3, abs=1e-4)


@pytest.mark.slow  # TRL fine-tuning of a (tiny) VLM: ~1 min on 2 cores
def test_vlm_critic_is_fine_tuned_with_trl_and_rates_with_rationales(rated_store, tmp_path, smollm_path):
    from video_fixtures import tiny_llava

    from promptloop.learners.vlm_critic import VLMCritic, VLMCriticConfig, train_vlm_critic

    rt, _ = rated_store
    vlm = tiny_llava(tmp_path / "llava", smollm_path)
    res = train_vlm_critic(rt.engine, rt.settings, VLMCriticConfig(model=str(vlm), name="vlm-test", max_steps=12, frames=2,
                                               learning_rate=3e-3, batch_size=4, holdout=0.1), progress=False)
    assert res["steps"] == 12 and res["last_loss"] < res["first_loss"]
    assert res["heldout_videos"] == 6 and 0.0 <= res["parse_rate"] <= 1.0 and res["samples"]
    with Session(rt.engine) as s:
        row = s.exec(select(ModelVersion).where(ModelVersion.name == "vlm-test")).one()
        assert row.algorithm == "critic" and row.data_provenance["kind"] == "vlm"
    # served as critic_<dimension> dimensions: a score with the model's rationale, or None with the reason
    rt.settings.video.critic = "vlm-test"
    critic = rt.video_critic("vlm-test")
    assert isinstance(critic, VLMCritic)
    out = critic.score(clip(5, 1, 3), "a yellow block sliding to the right")
    assert set(out) == {"critic_semantic_consistency", "critic_motion_smoothness", "critic_video_fidelity"}
    for m in out.values():
        assert (m.score is None and "no 1-5 score" in m.details["reason"]) or (0 <= m.score <= 1 and "rationale"
                                                                               in m.details)
