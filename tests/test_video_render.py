"""The diffusers renderer on the tiny CogVideoX pipeline: MP4s that match the request, the render cache, failures."""

import imageio.v2 as imageio
import pytest
import torch
from PIL import Image
from sqlmodel import Session, select

from promptloop.agents.renderer import RenderRequest
from promptloop.agents.video.cache import RenderCache
from promptloop.agents.video.diffusers_renderer import DiffusersRenderer
from promptloop.agents.video.tiny import TINY_LABEL, build_tiny_cogvideox
from promptloop.store.models import Video


@pytest.fixture(scope="module")
def tiny_pipeline():
    return build_tiny_cogvideox()


@pytest.fixture
def renderer(tiny_pipeline, tmp_path):
    return DiffusersRenderer("tiny", out_dir=tmp_path / "videos", batch_size=2, progress=False, pipeline=tiny_pipeline)


def test_tiny_render_matches_the_request(renderer):
    arts = renderer.render_many([RenderRequest(prompt="a red fox running through snow", seed=1),
                                 RenderRequest(prompt="waves at dusk", seed=2, num_frames=17, width=96, height=48,
                                               fps=12)])
    for art, (frames, w, h, fps) in zip(arts, [(9, 64, 64, 8), (17, 96, 48, 12)], strict=True):
        assert art.status == "ok" and art.label == TINY_LABEL and art.model == "tiny-random-cogvideox"
        reader = imageio.get_reader(art.path, format="FFMPEG")
        meta = reader.get_meta_data()
        assert reader.count_frames() == frames == art.frames
        assert tuple(meta["size"]) == (w, h) and meta["fps"] == fps
        reader.close()
        assert Image.open(art.thumbnail_path).size == (w, h)
    # the same prompt and seed give the same pixels; another seed does not
    again = renderer.render(RenderRequest(prompt="a red fox running through snow", seed=1, output=str(
        renderer.out_dir / "again.mp4")))
    other = renderer.render(RenderRequest(prompt="a red fox running through snow", seed=5))
    read = [imageio.mimread(p) for p in (arts[0].path, again.path, other.path)]
    assert all((a == b).all() for a, b in zip(read[0], read[1], strict=True))
    assert any((a != b).any() for a, b in zip(read[0], read[2], strict=True))


def test_pipelines_load_from_a_local_folder_with_their_options(tiny_pipeline, tmp_path):
    """The real loading path (DiffusionPipeline.from_pretrained) on two architectures saved to disk."""
    from video_fixtures import tiny_wan

    tiny_pipeline.save_pretrained(tmp_path / "cogvideox")
    cog = DiffusersRenderer(str(tmp_path / "cogvideox"), out_dir=tmp_path / "v", progress=False, vae_tiling=True,
                            vae_slicing=True, defaults={"width": 64, "height": 64, "num_frames": 9, "steps": 2})
    wan = DiffusersRenderer(str(tiny_wan(tmp_path / "wan")), out_dir=tmp_path / "v", progress=False,
                            defaults={"width": 32, "height": 32, "num_frames": 9, "steps": 2})
    assert type(cog.pipeline).__name__ == "CogVideoXPipeline" and cog.pipeline.vae.use_tiling
    assert cog.pipeline.vae.use_slicing and cog.label is None and cog.model_id == str(tmp_path / "cogvideox")
    assert type(wan.pipeline).__name__ == "WanPipeline"
    for r, frames, size in ((cog, 9, 64), (wan, 9, 32)):
        a = r.render(RenderRequest(prompt="a heron landing on a pond", seed=4))
        assert a.status == "ok" and (a.frames, a.width, a.height) == (frames, size, size)
    assert "renders 1 + 4k frames" in wan.render(RenderRequest(prompt="x", num_frames=8)).error  # Wan: 4k+1
    missing = DiffusersRenderer(str(tmp_path / "nowhere"), out_dir=tmp_path)
    from promptloop.errors import PromptloopError

    with pytest.raises(PromptloopError, match="could not load video model .* hub id"):
        _ = missing.pipeline


def test_requests_the_architecture_cannot_render_fail_with_the_reason(renderer):
    bad_frames, bad_size, good = renderer.render_many([
        RenderRequest(prompt="a", num_frames=8), RenderRequest(prompt="b", width=72), RenderRequest(prompt="c")])
    assert bad_frames.status == "failed" and "1 + 8k frames (e.g. 9)" in bad_frames.error
    assert bad_size.status == "failed" and "divisible by 16" in bad_size.error
    assert good.status == "ok" and bad_frames.path is None


def test_oom_and_nan_renders_are_recorded_and_the_batch_goes_on(tiny_pipeline, tmp_path, monkeypatch):
    r = DiffusersRenderer("tiny", out_dir=tmp_path, batch_size=3, progress=False, pipeline=tiny_pipeline)
    forward, decode, calls = tiny_pipeline.transformer.forward, tiny_pipeline.vae.decode, {"n": 0}

    def flaky_forward(*args, **kwargs):
        if kwargs["hidden_states"].shape[0] > 2 or "oom" in calls:  # the 3-video batch, then the retry of #2
            calls.pop("oom", None)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(*args, **kwargs)

    def nan_decode(z, *args, **kwargs):
        calls["n"] += 1
        out = decode(z, *args, **kwargs)
        if calls["n"] == 2:  # decodes happen for 'a' and then 'c' ('b' never gets past the transformer)
            out.sample[:] = float("nan")
        return out

    monkeypatch.setattr(tiny_pipeline.transformer, "forward", flaky_forward)
    monkeypatch.setattr(tiny_pipeline.vae, "decode", nan_decode)
    orig_render_batch = r._render_batch

    def mark_second(batch):
        if len(batch) == 1 and batch[0].prompt == "b":
            calls["oom"] = True
        return orig_render_batch(batch)

    monkeypatch.setattr(r, "_render_batch", mark_second)
    a, b, c = r.render_many([RenderRequest(prompt=p) for p in "abc"])
    assert a.status == "ok" and a.path
    assert b.status == "failed" and b.error.startswith("OOM") and "out of memory" in b.error
    assert c.status == "failed" and c.error.startswith("NaN frames")


def test_the_render_cache_never_renders_the_same_request_twice(tiny_pipeline, tmp_path, engine, monkeypatch):
    r = DiffusersRenderer("tiny", out_dir=tmp_path, progress=False, pipeline=tiny_pipeline)
    cache = RenderCache(r, engine)
    first = cache.render_many([RenderRequest(prompt="a lighthouse", seed=1), RenderRequest(prompt="a lighthouse",
                                                                                            seed=1)])
    assert cache.rendered == 1 and first[0].video_id == first[1].video_id and not first[0].cached
    # defaults spelled out are the same request; another process with its own cache shares the store
    again = RenderCache(r, engine).render_many([RenderRequest(prompt="a  lighthouse", seed=1, num_frames=9)])[0]
    assert again.cached and again.video_id == first[0].video_id
    assert cache.render_many([RenderRequest(prompt="a lighthouse", seed=2)])[0].video_id != first[0].video_id
    assert cache.rendered == 2
    # a deleted file is rendered again into the same row
    import os

    os.remove(first[0].artifact.path)
    redo = cache.render_many([RenderRequest(prompt="a lighthouse", seed=1)])[0]
    assert not redo.cached and redo.video_id == first[0].video_id and cache.rendered == 3
    # a failed render is stored as failed, then retried and updated in place
    forward, state = tiny_pipeline.transformer.forward, {"fail": True}

    def fails_once(*args, **kwargs):
        if state.pop("fail", False):
            raise torch.OutOfMemoryError("CUDA out of memory")
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_pipeline.transformer, "forward", fails_once)
    failed = cache.render_many([RenderRequest(prompt="a harbour", seed=1)])[0]
    assert not failed.ok and failed.artifact.error.startswith("OOM") and failed.artifact.path is None
    retried = cache.render_many([RenderRequest(prompt="a harbour", seed=1)])[0]
    assert retried.ok and not retried.cached and retried.video_id == failed.video_id
    with Session(engine) as s:
        row = s.get(Video, first[0].video_id)
        assert row.status == "ok" and row.frames == 9 and row.model == "tiny-random-cogvideox"
        assert s.get(Video, failed.video_id).error is None
        assert len(s.exec(select(Video)).all()) == 3
