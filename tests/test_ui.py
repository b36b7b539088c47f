"""The trace viewer: a real `promptloop ui` server on loopback, read in a real headless Chromium.

The run shown is produced by the rewrite graph on the embedded models; pairs,
versions, evaluations and a rendered MP4 are added to the same store so every
page has something real to show.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import unavailable
from servers import free_port, serve
from sqlmodel import Session, select

from promptloop.api import rewrite_many
from promptloop.services import Services
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import Candidate, Prompt, Round

ARTIFACTS = Path(os.environ.get("PROMPTLOOP_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / ".artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _write_mp4(path: Path, frames: int = 8, size: int = 64) -> None:
    import imageio.v3 as iio

    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        video[t, 20:40, 4 + 6 * t: 20 + 6 * t] = (230, 80, 40)  # a square moving right
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, video, fps=8, codec="libx264", macro_block_size=1)


@pytest.fixture(scope="module")
def ui_home(graph_runtime, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("ui_home")
    # the critic's LLM pass is off: this run only has to exist (the graph's own tests cover the critic)
    rt = Services(graph_runtime.settings.model_copy(update={
        "home": home, "database_url": None, "critic": graph_runtime.settings.critic.model_copy(update={"use_llm": False})}))
    rt.settings.database_url = f"sqlite:///{home / 'promptloop.db'}"
    rt.__dict__.update({"_models": graph_runtime._models, "embedder": graph_runtime.embedder,
                        "guard": graph_runtime.guard})
    [out] = rewrite_many(["a cat playing piano"], services=rt, n=3, max_refine_steps=0, model_version="base")
    with session_scope(rt.engine) as s:
        rnd = Round(index=0)
        s.add(rnd)
        s.flush()
        p, _ = repo.add_prompt(s, "a cat playing piano")
        base, _ = repo.get_or_create_version(s, "base", base_model="smollm2", status="archived")
        v, _ = repo.get_or_create_version(s, "r0-sft", base_model="smollm2", parent_id=base.id, algorithm="sft",
                                          round_id=rnd.id, status="champion",
                                          metrics={"first_loss": 1.68, "last_loss": 1.47,
                                                   "loss_curve": [[1, 1.68], [2, 1.55], [3, 1.47]], "decision": {
                                              "promoted": True, "rule": "promoted", "reason": "gain above zero",
                                              "primary": {"metric": "judge_total", "gain": 0.0351,
                                                          "interval": [0.0112, 0.0603]},
                                              "guardrails": [{"metric": "repetition", "parent": 0.331,
                                                              "candidate": 0.297, "tolerance": 0.02, "passed": True},
                                                             {"metric": "intent_recall_at_1", "parent": 0.703,
                                                              "candidate": 0.701, "tolerance": 0.02, "passed": True,
                                                              "note": "against teacher:gpt4o 0.7030 (champion "
                                                                      "0.8750)"}],
                                              "pairwise": {"wins": 3, "ties": 1, "losses": 0,
                                                           "first_position_rate": 0.625}}})
        chosen, _ = repo.add_candidate(s, p.id, out.candidates[0], round_id=rnd.id)
        rejected, _ = repo.add_candidate(s, p.id, "a cat", round_id=rnd.id)
        repo.add_pair(s, p.id, chosen.id, rejected.id, margin=0.31, round_id=rnd.id,
                      chosen_scores={"total": 0.81, "helpful": 0.9}, rejected_scores={"total": 0.5, "helpful": 0.2})
        mp4 = home / "videos" / "v1.mp4"
        _write_mp4(mp4)
        repo.add_video(s, "k1", candidate_id=chosen.id, renderer="synthetic", model="synthetic test clip (moving square)",
                       seed=0, path=str(mp4), frames=8, fps=8.0, width=64, height=64)
        for name, vid, total in (("base", base.id, 0.7276), ("r0-sft", v.id, 0.7627)):
            repo.add_evaluation(s, name, "eval", ["a cat playing piano"], {}, model_version_id=vid,
                                metrics={"judge_total": total, "recall_at_1": 1.0, "words": 60.0})
    return home, out


@pytest.fixture(scope="module")
def ui_url(ui_home, tmp_path_factory: pytest.TempPathFactory):
    home, _ = ui_home
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTLOOP_")}
    env.update(PROMPTLOOP_HOME=str(home))
    cmd = [sys.executable, "-m", "promptloop.cli", "ui", "--port", str(port)]
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    with serve(cmd, f"http://127.0.0.1:{port}/api/runs", log, env=env):
        yield f"http://127.0.0.1:{port}"


def test_pages_show_the_stores_content(ui_url: str, ui_home):
    _, out = ui_home
    runs = httpx.get(f"{ui_url}/api/runs").json()
    assert [r["graph"] for r in runs] == ["rewrite"] and runs[0]["trace_id"] == out.trace_id
    detail = httpx.get(f"{ui_url}/api/runs/{out.trace_id[:10]}").json()  # a unique prefix is enough
    assert [e["node"] for e in detail["timeline"]] == ["guard_input", "rewrite", "critique", "pick_best",
                                                       "guard_output"]
    [item] = detail["items"]
    assert [c["text"] for c in item["candidates"]] == out.candidates
    assert max(c["total"] for c in item["candidates"]) == pytest.approx(out.reward["total"])
    pairs = httpx.get(f"{ui_url}/pairs?round=0").text
    assert "margin 0.310" in pairs and "chosen" in pairs and 'src="/videos/1"' in pairs
    assert "No pairs yet" in httpx.get(f"{ui_url}/pairs?round=5").text
    video = httpx.get(f"{ui_url}/videos/1")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4" and len(video.content) > 500
    part = httpx.get(f"{ui_url}/videos/1", headers={"Range": "bytes=0-99"})  # players seek with ranges
    assert part.status_code == 206 and part.content == video.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(video.content)}"
    versions = httpx.get(f"{ui_url}/versions").text
    assert versions.index("base") < versions.index("└ r0-sft") and "0.7627" in versions and "champion" in versions
    # the gate's decision: rule, gain with its interval, each guardrail, the pairwise judge
    assert "judge_total gain +0.0351" in versions and "[+0.011, +0.060]" in versions
    assert "ok repetition 0.331 → 0.297 (±0.02)" in versions and "3/1/0" in versions
    assert "<em>against teacher:gpt4o 0.7030 (champion 0.8750)</em>" in versions  # a teacher round's reference
    png = httpx.get(f"{ui_url}/metrics/rounds.png", timeout=60)  # matplotlib on a busy 2-core machine
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'src="/versions/losses.png"' in versions  # the stored loss curves, plotted
    losses = httpx.get(f"{ui_url}/versions/losses.png", timeout=60)
    assert losses.status_code == 200 and losses.content[:8] == b"\x89PNG\r\n\x1a\n" and losses.content != png.content
    assert httpx.get(f"{ui_url}/runs/nope").status_code == 404
    assert httpx.get(f"{ui_url}/?round=x").status_code == 400
    assert httpx.post(f"{ui_url}/api/runs").status_code == 405  # read-only


def test_run_page_in_a_real_browser(ui_url: str, ui_home):
    if CHROMIUM is None:
        unavailable("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    _, out = ui_home
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "ui-run.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(ui_url)
            page.click(f"text={out.trace_id}")
            page.wait_for_selector("#timeline")
            nodes = page.locator("tr.node").evaluate_all("rows => rows.map(r => r.dataset.node)")
            assert nodes == ["guard_input", "rewrite", "critique", "pick_best", "guard_output"]
            totals = [float(t) for t in page.locator("td.reward-total").all_inner_texts()]
            assert len(totals) == len(out.candidates) and max(totals) == pytest.approx(out.reward["total"], abs=1e-3)
            assert page.locator("tr.best").count() == 1
            assert out.prompt in page.inner_text("main")
            page.screenshot(path=str(shot), full_page=True)
            page.goto(f"{ui_url}/pairs")
            assert page.locator("video").count() == 1
            # no-store: the <video> element's own ranged request may sit in the cache as a 206
            ok = page.evaluate("async () => (await fetch(document.querySelector('video').src, "
                               "{cache: 'no-store'})).status")
            assert ok == 200
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_ui_needs_no_writes(ui_home):
    """Opening the viewer creates nothing: the store's row counts are unchanged by serving."""
    home, _ = ui_home
    from promptloop.store.engine import make_engine

    eng = make_engine(f"sqlite:///{home / 'promptloop.db'}")
    with Session(eng) as s:
        assert len(s.exec(select(Prompt)).all()) >= 1 and len(s.exec(select(Candidate)).all()) >= 2
    eng.dispose()
