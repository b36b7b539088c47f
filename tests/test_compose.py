"""docker-compose.yml: valid for Compose, and every promptloop service is configured with real settings and
real CLI options (no Docker engine runs here, so the stack itself is not started)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import unavailable
from typer.main import get_command

from promptloop.cli import app
from promptloop.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
_VAR = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")
SECRETS = ("POSTGRES_PASSWORD", "VLLM_API_KEY", "PROMPTLOOP_UI_TOKEN")


def _value(m: re.Match) -> str:
    return f"<{m.group(1)}>" if m.group(2) == "?" else (m.group(3) or "")


def _defaults(value):
    """Compose's ${VAR:-default} interpolation with an empty environment ($$ escapes a literal $); a required
    ${VAR:?message} becomes <VAR>, standing for the value .env must give."""
    if isinstance(value, str):
        return _VAR.sub(_value, value.replace("$${", "\0")).replace("\0", "${")
    if isinstance(value, list):
        return [_defaults(v) for v in value]
    if isinstance(value, dict):
        return {k: _defaults(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return _defaults(yaml.safe_load(COMPOSE.read_text()))


def test_compose_client_accepts_the_file():
    client = shutil.which("docker-compose")
    cmd = [client, "-f", str(COMPOSE), "config", "-q"] if client else None
    if cmd is None and shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        cmd = ["docker", "compose", "-f", str(COMPOSE), "config", "-q"] if probe.returncode == 0 else None
    if cmd is None:
        unavailable("no Compose client here (apt-get install docker-compose); the structural checks still run")
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**base, **dict.fromkeys(SECRETS, "x")})
    assert proc.returncode == 0, proc.stderr
    for missing in SECRETS:  # no fallback password: Compose refuses to start without each secret
        env = {**base, **{k: "x" for k in SECRETS if k != missing}}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        assert proc.returncode != 0 and missing in proc.stdout + proc.stderr


def test_services_and_their_wiring(compose: dict):
    services = compose["services"]
    assert {"postgres", "init", "vllm", "loop", "collector", "ui"} <= set(services)
    vllm = services["vllm"]
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"  # adapters switched at run time
    assert "--enable-lora" in vllm["command"] and vllm["deploy"]["resources"]["reservations"]["devices"]
    assert services["ui"]["ports"] == ["127.0.0.1:8501:8501"]  # loopback on the host
    assert services["collector"]["profiles"] == ["scale"]
    # the scale profile: two collectors on the loop's one vLLM, which holds as many adapters as they may load
    collector = services["collector"]
    assert collector["deploy"]["replicas"] == "2" and "vllm" in collector["depends_on"]
    assert collector["environment"]["PROMPTLOOP_BACKENDS__REWRITER__BASE_URL"] == "http://vllm:8000/v1"
    cmd = vllm["command"]
    assert cmd[cmd.index("--max-cpu-loras") + 1] == collector["environment"]["PROMPTLOOP_BACKENDS__REWRITER__MAX_LORAS"]
    assert vllm["environment"]["VLLM_LORA_RESOLVER_CACHE_DIR"] == "/data/promptloop/adapters"  # the shared volume
    home_mounts = {name: [v for v in s.get("volumes", []) if v.startswith("promptloop-home:")]
                   for name, s in services.items()}
    assert home_mounts["vllm"] == home_mounts["loop"] == ["promptloop-home:/data/promptloop"]  # same adapter paths


def test_promptloop_services_use_real_settings(compose: dict, monkeypatch: pytest.MonkeyPatch):
    for name in ("init", "loop", "collector", "ui"):
        env = compose["services"][name]["environment"]
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        s = Settings()
        assert s.database_url.startswith("postgresql+psycopg://promptloop:<POSTGRES_PASSWORD>@postgres:5432/")
        assert s.backend_for("rewriter").bearer_token() == "<VLLM_API_KEY>"  # vLLM only answers with the key
        rewriter = s.backend_for("rewriter")
        assert (rewriter.kind, rewriter.base_url, rewriter.model) == ("openai", "http://vllm:8000/v1", "rewriter")
        assert (rewriter.max_loras, rewriter.adapter_loading) == (8, "api")
        assert s.backend_for("critic").kind == "transformers"


def _parse(args: list[str]) -> list[str]:
    """Parse a promptloop command line with the real CLI's parser (no invocation); returns the command path."""
    cmd = get_command(app)
    path = []
    ctx = cmd.make_context("promptloop", list(args), resilient_parsing=False)
    while hasattr(cmd, "resolve_command"):  # a group: descend into the named subcommand
        pending = list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])) + ctx.args
        name, cmd, rest = cmd.resolve_command(ctx, pending)
        path.append(name)
        ctx = cmd.make_context(name, rest, parent=ctx)
    return path


def test_service_commands_are_valid_cli_invocations(compose: dict):
    services = compose["services"]
    assert _parse(services["init"]["command"]) == ["init"]
    assert _parse(services["loop"]["command"]) == ["loop", "watch"]
    assert _parse(services["ui"]["command"]) == ["ui"]
    line = services["collector"]["command"][0].replace("exec promptloop ", "")
    line = line.replace("${PROMPTLOOP_COLLECT_ROUND:-1}", "1").replace('"$HOSTNAME"', "c1")
    assert _parse(line.split()) == ["collect", "pairs"]
    with pytest.raises(Exception, match="No such option"):
        _parse(["loop", "watch", "--no-such-option"])


def test_deployment_hardening(compose: dict):
    services = compose["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "<POSTGRES_PASSWORD>"
    cmd = services["vllm"]["command"]
    assert cmd[cmd.index("--api-key") + 1] == "<VLLM_API_KEY>"
    assert services["ui"]["environment"]["PROMPTLOOP_WEB__TOKEN"] == "<PROMPTLOOP_UI_TOKEN>"
    assert ":-promptloop}" not in COMPOSE.read_text()
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    users = [ln.split()[1] for ln in dockerfile if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    # LangGraph dev server state (pickles loaded at start) is never committed
    tracked = subprocess.run(["git", "ls-files", ".langgraph_api"], capture_output=True, text=True, cwd=ROOT)
    assert tracked.returncode != 0 or tracked.stdout.strip() == ""
    assert ".langgraph_api/" in (ROOT / ".gitignore").read_text().splitlines()
