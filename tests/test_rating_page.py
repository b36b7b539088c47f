"""The rating page: a real `promptloop ratings serve` on loopback, used with the keyboard in headless Chromium."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from helpers import unavailable
from servers import free_port, serve
from sqlmodel import Session, select
from video_fixtures import square_video, static_video

from promptloop.agents.video.media import write_mp4
from promptloop.config import Settings
from promptloop.services import Services
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import HumanRating

ARTIFACTS = Path(os.environ.get("PROMPTLOOP_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / ".artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def rating_server(tmp_path):
    home = tmp_path / "home"
    rt = Services(Settings(home=home))
    with session_scope(rt.engine) as s:
        p, _ = repo.add_prompt(s, "a yellow block sliding right")
        c, _ = repo.add_candidate(s, p.id, "A bright yellow block glides smoothly to the right across a grey floor.")
        for i, (frames, cand) in enumerate(((square_video(), c.id), (static_video(), None))):
            path = write_mp4(frames, home / "videos" / f"{i}.mp4", fps=8)
            repo.add_video(s, f"k{i}", renderer="synthetic", model="synthetic clip", seed=i, path=str(path),
                           candidate_id=cand, params={"prompt": "grainy still texture"} if cand is None else {})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTLOOP_")}
    env.update(PROMPTLOOP_HOME=str(home))
    cmd = [sys.executable, "-m", "promptloop.cli", "ratings", "serve", "--rater", "ana", "--port", str(port)]
    with serve(cmd, f"http://127.0.0.1:{port}/api/progress", tmp_path / "rating.log", env=env):
        yield f"http://127.0.0.1:{port}", rt


def test_rating_two_videos_in_a_real_browser(rating_server):
    if CHROMIUM is None:
        unavailable("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    url, rt = rating_server
    assert httpx.get(f"{url}/api/progress").json() == {"rater": "ana", "total": 2, "remaining": 2, "rated": 0,
                                                       "next": 1}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                     "--no-first-run", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            assert page.inner_text("#user-prompt") == "a yellow block sliding right"
            assert "remaining 2" in page.inner_text("#progress")
            assert page.evaluate("async () => (await fetch(document.querySelector('video').src)).status") in (200, 206)
            # keyboard only: a digit scores the focused dimension and moves to its rationale; Tab to the next
            for score, why in (("4", "the block is there"), ("5", "steady glide"), ("3", "soft edges")):
                page.keyboard.press(score)
                page.keyboard.type(why)
                page.keyboard.press("Tab")
            page.screenshot(path=str(ARTIFACTS / "rating-page.png"), full_page=True)
            page.keyboard.press("Control+Enter")
            page.wait_for_selector("text=grainy still texture")
            assert "rated 1 / 2" in page.inner_text("#progress")
            # a missing rationale is refused with the reason, and what was typed stays in the form
            page.check("input[name=score_semantic_consistency][value='2']")
            page.fill("textarea[name=rationale_semantic_consistency]", "no block at all")
            page.check("input[name=score_motion_smoothness][value='1']")
            page.check("input[name=score_video_fidelity][value='2']")
            page.fill("textarea[name=rationale_video_fidelity]", "noise")
            page.evaluate("document.querySelectorAll('textarea').forEach(t => t.removeAttribute('required'))")
            page.click("#save")
            assert "motion_smoothness: missing rationale" in page.inner_text(".errors")
            assert page.input_value("textarea[name=rationale_semantic_consistency]") == "no block at all"
            page.fill("textarea[name=rationale_motion_smoothness]", "nothing moves")
            page.click("#save")
            page.wait_for_selector("#done")
            assert "All 2 videos are rated by ana" in page.inner_text("#done")
        finally:
            browser.close()
    with Session(rt.engine) as s:
        rows = s.exec(select(HumanRating).order_by(HumanRating.video_id, HumanRating.id)).all()
    got = [(r.video_id, r.dimension, r.score, r.rationale, r.rater) for r in rows]
    assert got == [(1, "semantic_consistency", 4.0, "the block is there", "ana"),
                   (1, "motion_smoothness", 5.0, "steady glide", "ana"),
                   (1, "video_fidelity", 3.0, "soft edges", "ana"),
                   (2, "semantic_consistency", 2.0, "no block at all", "ana"),
                   (2, "motion_smoothness", 1.0, "nothing moves", "ana"),
                   (2, "video_fidelity", 2.0, "noise", "ana")]
    assert httpx.get(f"{url}/api/progress").json()["remaining"] == 0
    assert httpx.post(f"{url}/rate/99", data={"csrf": "x"}).status_code == 403  # no session: no form token
