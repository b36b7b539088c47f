"""Video reward metrics on synthetic videos with known answers, frame safety on a real photo, alignment, VLM."""

import base64
import io
import json

import httpx
import numpy as np
import pytest
from video_fixtures import jerky_video, landscape_pan, noise_video, square_video, static_video, tiny_clip

from promptloop.agents.llm.openai_backend import OpenAIChatModel
from promptloop.agents.video.alignment import TextVideoAlignment
from promptloop.agents.video.media import read_video, write_mp4
from promptloop.agents.video.metrics import frame_metrics, frame_quality
from promptloop.agents.video.nsfw import NSFWScorer
from promptloop.agents.video.scorer import VideoScorer
from promptloop.agents.video.vlm_judge import VLMJudge, parse_judgement


def _scores(frames):
    m = frame_metrics(frames)
    return {k: r.score for k, r in m.items()}, {k: r.raw for k, r in m.items()}


def test_static_video_has_no_motion_and_no_flicker():
    s, raw = _scores(static_video())
    assert raw["temporal_flickering"] == 0.0 and s["temporal_flickering"] == 1.0
    assert raw["motion_magnitude"] < 0.01 and s["flow_dynamic_degree"] == 0.0
    assert s["flow_smoothness"] == 1.0  # nothing moves: smooth by definition, flow_dynamic_degree penalises it
    assert s["frame_quality"] == 1.0  # a still video is not a stalled one


def test_square_at_constant_speed_moves_smoothly():
    s, raw = _scores(square_video())
    assert raw["motion_magnitude"] > 0.2 and s["flow_dynamic_degree"] == 1.0
    assert s["flow_smoothness"] > 0.85
    assert s["temporal_flickering"] > 0.98  # only the square's pixels change


def test_noise_flickers_and_jitter_is_not_smooth():
    noise, noise_raw = _scores(noise_video())
    assert noise_raw["temporal_flickering"] > 80 and noise["temporal_flickering"] < 0.7  # ~85/255 for uniform noise
    square, _ = _scores(square_video())
    jerky, _ = _scores(jerky_video())
    assert noise["flow_smoothness"] < 0.5 and jerky["flow_smoothness"] < 0.3
    assert square["flow_smoothness"] > jerky["flow_smoothness"] + 0.5


def test_frame_quality_counts_blank_saturated_and_stalled_frames():
    v = square_video()
    v[2] = 128  # blank (uniform grey)
    v[5] = 255  # saturated (white)
    v[9] = v[8]  # a stall in a moving video
    r = frame_quality(v)
    assert (r.details["blank"], r.details["saturated"], r.details["stalled"]) == (1, 1, 1)
    assert r.score == pytest.approx(1 - 3 / len(v), abs=1e-4)


def test_metrics_survive_an_mp4_round_trip(tmp_path):
    path = write_mp4(square_video(), tmp_path / "square.mp4", fps=8)
    frames, fps = read_video(path)
    assert frames.shape == (16, 96, 128, 3) and fps == 8
    s, raw = _scores(frames)
    assert raw["motion_magnitude"] > 0.2 and s["flow_dynamic_degree"] == 1.0
    # H.264 rings around the square's edges, which costs some smoothness; jitter still scores far lower
    jerky, _ = _scores(read_video(write_mp4(jerky_video(), tmp_path / "jerky.mp4", fps=8))[0])
    assert s["flow_smoothness"] > 0.7 and s["flow_smoothness"] > jerky["flow_smoothness"] + 0.5


def test_nsfw_score_is_low_for_a_real_landscape_video(tmp_path):
    path = write_mp4(landscape_pan(), tmp_path / "landscape.mp4", fps=8)
    frames, _ = read_video(path)
    r = NSFWScorer(frames=6).score(frames)
    assert len(r.details["nsfw"]) == 6 and r.details["model"].startswith("open_nsfw")
    assert r.details["nsfw_max"] == max(r.details["nsfw"]) < 0.05
    assert r.score == pytest.approx(1 - r.details["nsfw_max"], abs=1e-4) and r.score > 0.95


def test_alignment_unavailable_without_a_model_and_offline(monkeypatch):
    frames = static_video()
    none = TextVideoAlignment(None).score(frames, "a fox")
    assert none.score is None and "no image-text model configured" in none.details["reason"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = TextVideoAlignment("openai/clip-vit-base-patch32").score(frames, "a fox")
    assert hub.score is None and "unavailable here" in hub.details["reason"]


def test_alignment_with_a_local_clip_checkpoint(tmp_path):
    align = TextVideoAlignment(str(tiny_clip(tmp_path / "clip")), frames=4)
    frames = square_video()
    a, b = align.score(frames, "a yellow square sliding right"), align.score(frames, "a storm over the sea")
    assert len(a.details["cosine"]) == 4 and -1 <= a.raw <= 1 and a.raw != b.raw
    assert a.score == pytest.approx(min(1.0, max(0.0, a.raw)), abs=1e-4)


def _vlm_server(answer: str, seen: list, reject_schema: bool = False) -> httpx.MockTransport:
    """An OpenAI-compatible chat endpoint (the wire format vLLM serves for Qwen2.5-VL)."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if reject_schema and "response_format" in body:
            return httpx.Response(400, json={"error": {"message": "response_format not supported"}})
        return httpx.Response(200, json={"id": "x", "object": "chat.completion", "model": body["model"],
                                         "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": answer}}]})

    return httpx.MockTransport(handler)


def test_vlm_judge_sends_frames_and_parses_scores():
    answer = json.dumps({"visual_quality": {"score": 4, "rationale": "sharp"},
                         "text_alignment": {"score": 2, "rationale": "no fox visible"},
                         "motion_quality": {"score": 5, "rationale": "steady"},
                         "safety": {"score": 5, "rationale": "harmless"}})
    seen: list = []
    client = OpenAIChatModel("http://vlm.test/v1", "qwen2.5-vl", transport=_vlm_server(answer, seen), backoff=0)
    out = VLMJudge(client, frames=3).score(square_video(), "a fox in the snow")
    content = seen[0]["messages"][0]["content"]
    images = [c["image_url"]["url"] for c in content if c["type"] == "image_url"]
    assert len(images) == 3 and "a fox in the snow" in content[0]["text"]
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(images[0].split(",", 1)[1])))
    assert img.format == "JPEG" and img.size == (128, 96)
    assert seen[0]["response_format"]["json_schema"]["schema"]["required"] == list(
        ["visual_quality", "text_alignment", "motion_quality", "safety"])
    assert out["vlm_text_alignment"].score == 0.25 and out["vlm_motion_quality"].score == 1.0
    assert out["vlm_text_alignment"].details["rationale"] == "no fox visible"


def test_vlm_judge_falls_back_without_structured_output_and_flags_bad_answers():
    seen: list = []
    client = OpenAIChatModel("http://vlm.test", "m", transport=_vlm_server(
        "Sure! ```json\n{\"visual_quality\": {\"score\": 9, \"rationale\": \"?\"}}\n```", seen, reject_schema=True),
        backoff=0)
    out = VLMJudge(client, frames=2).score(static_video(), "a cat")
    assert "response_format" in seen[0] and "response_format" not in seen[1] and client.structured_output is False
    assert out["vlm_visual_quality"].score is None  # 9 is off the 1-5 scale: not invented, not clipped
    assert out["vlm_safety"].score is None and "no 1-5 score" in out["vlm_safety"].details["reason"]
    assert parse_judgement("no json here") == {}


def test_scorer_reports_every_dimension_and_survives_a_failing_vlm(tmp_path):
    def refuse(request):
        return httpx.Response(401, json={"error": "bad key"})

    client = OpenAIChatModel("http://vlm.test", "m", transport=httpx.MockTransport(refuse), backoff=0)
    scorer = VideoScorer(alignment=TextVideoAlignment(None), nsfw=NSFWScorer(frames=4), vlm=VLMJudge(client))
    path = write_mp4(square_video(), tmp_path / "v.mp4", fps=8)
    s = scorer.score_file(path, "a yellow square")
    assert set(s.dimensions) >= {"temporal_flickering", "flow_dynamic_degree", "flow_smoothness", "frame_quality",
                                 "text_video_alignment", "frame_safety"}
    assert "motion_magnitude" not in s.dimensions and s.raw["motion_magnitude"] > 0
    assert s.dimensions["text_video_alignment"] is None and s.dimensions["frame_safety"] > 0.9
    assert "401" in s.details["VLMJudge"]["reason"] and s.frames == 16
    assert all(v is None or 0 <= v <= 1 for v in s.dimensions.values())
    assert np.isfinite(s.seconds)
