"""Credentials never leave their setting: a planted database password and backend secrets are not in any output,
nor anywhere under home (database, checkpoints, reports), even when the calls that carry them fail."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli
from sqlalchemy.engine import make_url

from promptloop.config import BackendSettings, Settings
from promptloop.errors import redact

PASSWORD = "Pl4ntedDbPw"
URL_SECRET = "Pl4ntedUrlPw"
API_KEY = "sk-Pl4ntedApiKey"


def _grep_home(home: Path, *secrets: str) -> list[str]:
    hits = []
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return hits


def test_redact_masks_every_form():
    assert redact("postgresql+psycopg://bob:hunter2@db:5432/x failed") == "postgresql+psycopg://bob:***@db:5432/x failed"
    assert redact("Authorization: Bearer sk-abc.DEF_123") == "Authorization: Bearer ***"
    assert redact("http://h/v1?api_key=zzz&x=1") == "http://h/v1?api_key=***&x=1"
    assert redact("no secrets here: a:b@c is not a URL") == "no secrets here: a:b@c is not a URL"


def test_api_key_is_a_secret_in_settings():
    b = BackendSettings(kind="openai", base_url="http://127.0.0.1:1/v1", api_key=API_KEY)
    assert API_KEY not in repr(b) and API_KEY not in b.model_dump_json() and b.bearer_token() == API_KEY
    s = Settings(backends={"rewriter": b})
    assert API_KEY not in repr(s) and API_KEY not in s.model_dump_json()


def test_planted_backend_secrets_stay_out_of_output_and_home(tmp_path: Path, smollm_path: Path):
    home = tmp_path / "home"
    run_cli(home, "init", "--no-models", "--no-data")
    env = {"PROMPTLOOP_BASE_MODEL": str(smollm_path), "PROMPTLOOP_CRITIC__USE_LLM": "false",
           "PROMPTLOOP_BACKENDS__REWRITER__KIND": "openai",
           "PROMPTLOOP_BACKENDS__REWRITER__BASE_URL": f"http://svc:{URL_SECRET}@127.0.0.1:9/v1",
           "PROMPTLOOP_BACKENDS__REWRITER__API_KEY": API_KEY,
           "PROMPTLOOP_BACKENDS__REWRITER__MAX_RETRIES": "0",
           "PROMPTLOOP_BACKENDS__REWRITER__TIMEOUT": "2"}
    proc = run_cli(home, "rewrite", "a red kite over a beach", "--model-version", "base", "--max-refine-steps", "0",
                   check=False, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "svc:***@127.0.0.1:9" in proc.stderr  # the failure is reported, with the URL masked
    for secret in (URL_SECRET, API_KEY):
        assert secret not in proc.stdout + proc.stderr
    # the failed node is in the trace, its error masked too
    traces = run_cli(home, "traces", "list", "--json", env=env)
    assert sum(run["errors"] for run in json.loads(traces.stdout)) == 1
    assert _grep_home(home, URL_SECRET, API_KEY) == []


def test_planted_database_password_stays_out(postgres_url: str, tmp_path: Path):
    home = tmp_path / "home"
    # the test cluster trusts loopback, so a password in the URL is accepted and ignored: it can be planted
    url = make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)
    env = {"PROMPTLOOP_DATABASE_URL": url}
    outputs = [run_cli(home, "db", "upgrade", env=env), run_cli(home, "init", "--no-models", env=env),
               run_cli(home, "prompts", "stats", env=env)]
    bad = make_url(url).set(port=9).render_as_string(hide_password=False)
    outputs.append(run_cli(home, "prompts", "list", check=False, env={"PROMPTLOOP_DATABASE_URL": bad}))
    assert outputs[0].stdout.count(":***@") + outputs[0].stderr.count(":***@") == 1
    assert outputs[-1].returncode == 2 and "database unreachable" in outputs[-1].stderr
    for p in outputs:
        assert PASSWORD not in p.stdout + p.stderr
    assert _grep_home(home, PASSWORD) == []
