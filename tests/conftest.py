"""Shared fixtures: an isolated PROMPTLOOP_HOME per test, one real SmolLM2 and MiniLM per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def engine(settings: Settings):
    settings.ensure_home()
    eng = make_engine(settings.database_url)
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
def embedder():
    from promptloop.agents.embedder import Embedder

    return Embedder("all-minilm-l6-v2", device="cpu")


@pytest.fixture(scope="session")
def graph_runtime(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path):
    """A Runtime on the real embedded models with short generations, shared by the graph tests."""
    from promptloop.runtime import Runtime

    home = tmp_path_factory.mktemp("graph_home")
    settings = Settings(home=home, base_model=str(smollm_path), device="cpu",
                        generation={"max_new_tokens": 48}, critic={"max_refine_steps": 1})
    return Runtime(settings)


@pytest.fixture(scope="session")
def guard(embedder):
    from promptloop.agents.safety.guard import SafetyGuard

    return SafetyGuard(embedder)
