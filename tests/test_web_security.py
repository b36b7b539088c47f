"""The web apps' security model on real servers (`promptloop ratings serve`, `promptloop ui`) spoken to over HTTP:
CSRF tokens and Origin / Host checks on the rating page, files served only from under home, 404 / 400 instead of
500 on hostile ids and bodies, LIKE wildcards in trace ids, and the access token beyond loopback."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import httpx
import pytest
from helpers import table_snapshot
from servers import free_port, serve
from video_fixtures import square_video

from promptloop.agents.video.media import write_mp4
from promptloop.config import Settings
from promptloop.services import Services
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import HumanRating, TraceEvent


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Services]:
    root = tmp_path_factory.mktemp("websec")
    home = root / "home"
    rt = Services(Settings(home=home))
    outside = root / "secret.txt"
    outside.write_text("not for the web")
    with session_scope(rt.engine) as s:
        p, _ = repo.add_prompt(s, "a yellow block sliding right")
        c, _ = repo.add_candidate(s, p.id, "A bright yellow block glides to the right across a grey floor.")
        path = write_mp4(square_video(), home / "videos" / "0.mp4", fps=8)
        repo.add_video(s, "k0", renderer="synthetic", model="synthetic clip", seed=0, path=str(path), candidate_id=c.id)
        repo.add_video(s, "k1", renderer="synthetic", model="synthetic clip", seed=1, path=str(outside),
                       candidate_id=c.id)
        for tid in ("abc123", "abd456"):
            s.add(TraceEvent(thread_id=tid, graph="rewrite", node="guard_input"))
    return home, rt


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTLOOP_")}
    env.update(PROMPTLOOP_HOME=str(home), **extra)
    return env


@pytest.fixture(scope="module")
def rating_url(home, tmp_path_factory):
    h, _ = home
    port = free_port()
    cmd = [sys.executable, "-m", "promptloop.cli", "ratings", "serve", "--rater", "ana", "--port", str(port)]
    with serve(cmd, f"http://127.0.0.1:{port}/api/progress", tmp_path_factory.mktemp("r") / "log", env=_env(h)):
        yield f"http://127.0.0.1:{port}"


def _form(url: str, client: httpx.Client) -> tuple[str, dict]:
    page = client.get(url + "/")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    fields = {"csrf": token}
    for d in ("semantic_consistency", "motion_smoothness", "video_fidelity"):
        fields[f"score_{d}"], fields[f"rationale_{d}"] = "4", "fine"
    return token, fields


def test_rating_page_refuses_cross_site_and_tokenless_posts(rating_url, home):
    _, rt = home
    before = table_snapshot(rt.engine)
    with httpx.Client() as client:
        _, fields = _form(rating_url, client)
        # a page on another origin posting the form (a browser sends its Origin): refused, nothing stored
        r = client.post(f"{rating_url}/rate/1", data=fields, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "cross-origin" in r.text
        r = client.post(f"{rating_url}/rate/1", data=fields, headers={"Referer": "http://evil.example/x"})
        assert r.status_code == 403
        # same origin but no CSRF token / another session's token: refused
        r = client.post(f"{rating_url}/rate/1", data={k: v for k, v in fields.items() if k != "csrf"})
        assert r.status_code == 403 and "form token" in r.text
    with httpx.Client() as stranger:  # no session cookie, someone else's token
        r = stranger.post(f"{rating_url}/rate/1", data=fields)
        assert r.status_code == 403
    # a JSON or text/plain body is not a form (a cross-site "simple request" could send text/plain)
    with httpx.Client() as client:
        _, fields = _form(rating_url, client)
        assert client.post(f"{rating_url}/rate/1", content="&".join(f"{k}={v}" for k, v in fields.items()),
                           headers={"Content-Type": "text/plain"}).status_code == 415
        r = client.post(f"{rating_url}/rate/1", content=b"csrf=\xff\xfe",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 400 and "UTF-8" in r.text
        assert client.post(f"{rating_url}/rate/1", content=b"csrf=%ff%fe",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 400
        # a Host that is not loopback (a DNS-rebinding page) gets nothing
        assert client.get(f"{rating_url}/api/progress", headers={"Host": "evil.example:80"}).status_code == 421
    assert table_snapshot(rt.engine) == before
    # the same form from the page itself is stored
    with httpx.Client() as client:
        _, fields = _form(rating_url, client)
        r = client.post(f"{rating_url}/rate/1", data=fields, headers={"Origin": rating_url})
        assert r.status_code == 303
    from sqlmodel import Session, select

    with Session(rt.engine) as s:
        assert [(x.video_id, x.score) for x in s.exec(select(HumanRating))] == [(1, 4.0)] * 3


def test_files_and_ids(rating_url):
    assert httpx.get(f"{rating_url}/videos/1").headers["content-type"] == "video/mp4"
    r = httpx.get(f"{rating_url}/videos/2")  # a row pointing outside home
    assert r.status_code == 404 and "not for the web" not in r.text
    assert httpx.get(f"{rating_url}/videos/{10**30}").status_code == 404
    assert httpx.get(f"{rating_url}/videos/{2**63}").status_code == 404


@pytest.fixture(scope="module")
def open_ui(home, tmp_path_factory):
    """`promptloop ui --host 0.0.0.0` with no token: it must generate one and say so."""
    h, _ = home
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "log"
    cmd = [sys.executable, "-m", "promptloop.cli", "ui", "--host", "0.0.0.0", "--port", str(port)]
    with serve(cmd, f"http://127.0.0.1:{port}/login", log, env=_env(h, COLUMNS="300")):
        yield f"http://127.0.0.1:{port}", log


def test_beyond_loopback_needs_the_token(open_ui):
    url, log = open_ui
    text = log.read_text()
    m = re.search(r"warning: serving on 0\.0\.0\.0, beyond loopback, .* generated one for this run: (\S+)", text)
    assert m, text
    token = m.group(1)
    assert httpx.get(f"{url}/api/runs").status_code == 401
    assert httpx.get(f"{url}/", headers={"Accept": "text/html"}).status_code == 303  # to the login page
    assert httpx.get(f"{url}/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    runs = httpx.get(f"{url}/api/runs", headers={"Authorization": f"Bearer {token}"})
    assert runs.status_code == 200 and {r["trace_id"] for r in runs.json()} == {"abc123", "abd456"}
    with httpx.Client() as browser:  # the login page sets an HttpOnly cookie
        assert browser.post(f"{url}/login", data={"token": "wrong"}).status_code == 401
        r = browser.post(f"{url}/login", data={"token": token})
        assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
        assert browser.get(f"{url}/versions").status_code == 200
        # LIKE wildcards in a trace-id prefix are literal characters, not patterns
        # (unescaped, 'abc%' and 'ab_1' would each match abc123 alone and answer 200)
        assert browser.get(f"{url}/api/runs/abc%25").status_code == 404
        assert browser.get(f"{url}/api/runs/ab_1").status_code == 404
        r = browser.get(f"{url}/api/runs/abc")
        assert r.status_code == 200 and r.json()["timeline"][0]["node"] == "guard_input"
        assert browser.get(f"{url}/videos/{10**30}").status_code == 404
        assert browser.get(f"{url}/?round={10**30}").status_code == 400


def test_a_given_token_is_used_without_warning(home, tmp_path):
    h, _ = home
    port = free_port()
    log = tmp_path / "log"
    cmd = [sys.executable, "-m", "promptloop.cli", "ui", "--host", "0.0.0.0", "--port", str(port),
           "--token", "s3cret-token"]
    with serve(cmd, f"http://127.0.0.1:{port}/login", log, env=_env(h)):
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/api/runs").status_code == 401
        assert httpx.get(f"{url}/api/runs", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert "warning" not in log.read_text() and "s3cret-token" not in log.read_text()
