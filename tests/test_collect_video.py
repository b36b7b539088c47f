"""`collect pairs --video` on the embedded rewriter and the tiny video pipeline: videos, video rewards, pairs."""

import pytest
import torch
from sqlmodel import Session, select

from promptloop.graphs.collection import CollectContext, run_collection
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import Candidate, PreferencePair, Reward, TraceEvent, Video
from promptloop.store.repository import ensure_round
from promptloop.store.versions import ensure_version

METRICS = ("temporal_flickering", "flow_dynamic_degree", "flow_smoothness", "frame_quality", "frame_safety")


def _setup(rt, texts, round_index, **kw):
    with session_scope(rt.engine) as s:
        prompts = [repo.add_prompt(s, t, split="train", source="test")[0] for t in texts]
    base = vars(rt.rewrite_context(n=3, max_refine_steps=0))
    ctx = CollectContext(**base, round_id=ensure_round(rt.engine, round_index), margin=0.02,
                         model_version_id=ensure_version(rt.engine, "base", rt.settings.base_model), video=True,
                         **kw)
    return prompts, ctx


def test_collect_pairs_with_video_feedback(graph_runtime):
    rt = graph_runtime
    prompts, ctx = _setup(rt, ["a red kite over a windy beach", "fireworks above a city"], 40, video_seeds=2,
                          video_share=0.5)
    graph = rt.collect_graph("pairs")
    report = run_collection(graph, "pairs", prompts, ctx, round_index=40, batch_size=2, key={"t": "video"})
    rendered = rt.render_cache.rendered
    with Session(rt.engine) as s:
        cands = s.exec(select(Candidate).where(Candidate.round_id == ctx.round_id)).all()
        by_id = {c.id: c for c in cands}
        videos = s.exec(select(Video).where(Video.candidate_id.in_(list(by_id)))).all()
        assert videos and all(v.status == "ok" and v.model == "tiny-random-cogvideox" for v in videos)
        # every candidate text rendered with both seeds (texts shared by two candidates share their videos)
        assert len(videos) == 2 * len({c.text for c in cands}) == rendered
        assert {v.seed for v in videos} == {ctx.video_seed, ctx.video_seed + 1}
        for v in videos:
            dims = {r.dimension: r for r in s.exec(select(Reward).where(Reward.video_id == v.id))}
            assert all(dims[m].score is not None and 0 <= dims[m].score <= 1 for m in METRICS)
            assert dims["text_video_alignment"].score is None  # no image-text model here: unavailable
            assert "no image-text model" in dims["text_video_alignment"].details["reason"]
            assert dims["video_total"].details["user_prompt"] in {p.text for p in prompts}  # the user's prompt
        for c in cands:
            r = {x.dimension: x.score for x in s.exec(select(Reward).where(Reward.candidate_id == c.id))}
            assert r["total"] == pytest.approx(0.5 * r["text_total"] + 0.5 * r["video_total"], abs=2e-4)
            assert r["frame_safety"] is not None and "harmless" in r
        pairs = s.exec(select(PreferencePair).where(PreferencePair.round_id == ctx.round_id)).all()
        assert pairs and report.stored["pairs"] == len(pairs)
        for p in pairs:
            ch, rj = p.chosen_scores, p.rejected_scores
            # a degenerate rejected side is taken whatever its total; any other is at least the margin below
            assert rj["degenerate"] or ch["total"] >= rj["total"] + ctx.margin - 1e-6
            expected = ("both" if ch["text_total"] > rj["text_total"] else "video") \
                if ch["video_total"] > rj["video_total"] else "text"
            assert p.feedback_level == expected
            linked = s.exec(select(Video).where(Video.id.in_(ch["video_ids"]))).all()
            assert len(linked) == 2 and {v.seed for v in linked} == {0, 1}
        nodes = s.exec(select(TraceEvent.node).where(TraceEvent.graph == "collect_pairs")).all()
        assert "video" in nodes
    from promptloop.store.stats import data_stats

    row = next(r for r in data_stats(rt.engine)["rounds"] if r["round"] == "40")
    assert row["videos_ok"] == len(videos) and sum(v for k, v in row.items() if k.endswith("_level")) == len(pairs)
    # the video node run again on the same candidates (a resumed chunk) renders and stores nothing new
    items = graph.get_state({"configurable": {"thread_id": report.thread_ids[0]}}).values["items"]
    with Session(rt.engine) as s:
        n_rewards = len(s.exec(select(Reward)).all())
    again = rt.video_feedback.apply(items, seeds=2, base_seed=ctx.video_seed, share=0.5)
    assert rt.render_cache.rendered == rendered
    assert [r["total"] for i in again for r in i["rewards"]] == [r["total"] for i in items for r in i["rewards"]]
    with Session(rt.engine) as s:
        assert len(s.exec(select(Reward)).all()) == n_rewards


@pytest.mark.slow  # the renderer-level failure test (test_video_render.py) runs by default
def test_a_failed_render_is_recorded_and_the_collection_goes_on(graph_runtime, monkeypatch):
    rt = graph_runtime
    prompts, ctx = _setup(rt, ["a snail crossing a mossy log", "a paper boat in the rain"], 41, video_seeds=1,
                          video_seed=100)
    pipe = rt.renderer().pipeline
    forward, calls = pipe.transformer.forward, {"n": 0}

    def oom_on_the_second_video(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return forward(*args, **kwargs)

    monkeypatch.setattr(pipe.transformer, "forward", oom_on_the_second_video)
    report = run_collection(rt.collect_graph("pairs"), "pairs", prompts, ctx, round_index=41, batch_size=2,
                            key={"t": "fail"})
    assert report.stored["candidates"] == 6
    with Session(rt.engine) as s:
        vids = s.exec(select(Video).where(Video.seed == 100)).all()
        failed = [v for v in vids if v.status == "failed"]
        assert len(failed) == 1 and failed[0].error.startswith("OOM") and failed[0].path is None
        assert len(vids) - 1 == sum(v.status == "ok" for v in vids) >= 4
        # the candidate whose only render failed keeps text-level feedback: no video total, total = text total
        cid = failed[0].candidate_id
        r = {x.dimension: x.score for x in s.exec(select(Reward).where(Reward.candidate_id == cid))}
        assert r["video_total"] is None and r["total"] == r["text_total"]
