"""Shared fixtures: an isolated PROMPTLOOP_HOME per test, one real SmolLM2 and MiniLM per session."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import unavailable

from promptloop.config import Settings
from promptloop.store.engine import make_engine
from promptloop.store.migrate import upgrade

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's ~/.promptloop, env vars or promptloop.toml."""
    for key in list(os.environ):
        if key.startswith("PROMPTLOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


POSTGRES_ENV = "PROMPTLOOP_TEST_POSTGRES_URL"
PG_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pg_test_server.sh"


def _postgres_url() -> tuple[str | None, bool]:
    """The test server's URL: PROMPTLOOP_TEST_POSTGRES_URL, else a local cluster started by the script
    (None only where PostgreSQL is not installed or cannot start); and whether this run started it."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url, False
    try:
        out = subprocess.run(["bash", str(PG_SCRIPT), "start"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None, False
    found = [line.split("=", 1)[1] for line in out.splitlines() if line.startswith(f"export {POSTGRES_ENV}=")]
    return (found[0] if found else None), "# started" in out.splitlines()


_POSTGRES_URL, _STARTED_POSTGRES = _postgres_url()  # resolved before the autouse fixture clears PROMPTLOOP_* vars


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the PostgreSQL server this run started (one that was already running, or named by URL, stays)."""
    if _STARTED_POSTGRES:
        subprocess.run(["bash", str(PG_SCRIPT), "stop"], capture_output=True, timeout=120, check=False)


def pytest_report_header(config: pytest.Config) -> str:
    if _POSTGRES_URL:
        return f"postgres: store and graph tests also run on {_POSTGRES_URL}"
    return (f"postgres: PostgreSQL is not installed and {POSTGRES_ENV} is not set, Postgres variants "
            "FAIL (apt-get install postgresql)")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new empty database on the test server (dropped afterwards); its SQLAlchemy URL."""
    if not _POSTGRES_URL:
        unavailable(f"PostgreSQL not available: not installed, and {POSTGRES_ENV} is not set")
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(_POSTGRES_URL)
    name = f"pl_test_{uuid.uuid4().hex[:12]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store's URL on each backend: a SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'promptloop.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def engine(settings: Settings, db_url: str):
    settings.ensure_home()
    settings.database_url = db_url
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared SmolLM2 per test session (set PROMPTLOOP_TEST_MODELS to reuse a folder across runs)."""
    reuse = os.environ.get("PROMPTLOOP_TEST_MODELS")
    return Path(reuse) if reuse else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def smollm_path(models_dir: Path) -> Path:
    from promptloop.agents.llm.prepare import prepare_model

    return prepare_model("smollm2-135m-instruct", models_dir, show_progress=False).path


@pytest.fixture(scope="session")
def chat_model(smollm_path: Path):
    from promptloop.agents.llm.transformers_backend import TransformersChatModel

    return TransformersChatModel(smollm_path, device="cpu", batch_size=16)


@pytest.fixture(scope="session")
def reference_lm(smollm_path: Path):
    from promptloop.agents.llm.reference import ReferenceLM

    return ReferenceLM(smollm_path, device="cpu")


@pytest.fixture(scope="session")
def embedder():
    from promptloop.agents.embedder import Embedder

    return Embedder("all-minilm-l6-v2", device="cpu")


@pytest.fixture(scope="session")
def graph_runtime(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path):
    """A Runtime on the real embedded models with short generations, shared by the graph tests."""
    from promptloop.services import Services

    home = tmp_path_factory.mktemp("graph_home")
    settings = Settings(home=home, base_model=str(smollm_path), device="cpu",
                        generation={"max_new_tokens": 48}, critic={"max_refine_steps": 1})
    return Services(settings)


@pytest.fixture(scope="session")
def pg_graph_runtime(tmp_path_factory: pytest.TempPathFactory, graph_runtime):
    """graph_runtime's models, with the store and the LangGraph checkpointer on PostgreSQL."""
    from promptloop.services import Services

    with fresh_postgres_database() as url:
        settings = graph_runtime.settings.model_copy(update={"home": tmp_path_factory.mktemp("pg_home"),
                                                             "database_url": url})
        rt = Services(settings)
        rt.__dict__.update({k: graph_runtime.__dict__[k] for k in ("_models",)})
        yield rt
        rt.engine.dispose()
        rt.checkpointer.conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def any_graph_runtime(request: pytest.FixtureRequest):
    """graph_runtime on SQLite, then the same on PostgreSQL (fails, naming the package, where no server is available)."""
    return request.getfixturevalue("graph_runtime" if request.param == "sqlite" else "pg_graph_runtime")


@pytest.fixture(scope="session")
def guard(embedder):
    from promptloop.agents.safety.guard import SafetyGuard

    return SafetyGuard(embedder)
