from pathlib import Path

import pytest
from pydantic import ValidationError

from promptloop.config import Settings, load_settings


def test_defaults_put_everything_under_home(tmp_path: Path):
    s = Settings(home=tmp_path / "h")
    assert s.home == (tmp_path / "h").resolve()
    assert s.database_url == f"sqlite:///{s.home / 'promptloop.db'}"
    for d in (s.models_dir, s.adapters_dir, s.videos_dir, s.reports_dir):
        assert d.parent == s.home
    assert not s.home.exists()  # nothing is written until asked
    s.ensure_home()
    assert s.models_dir.is_dir() and s.videos_dir.is_dir()


def test_precedence_defaults_toml_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert Settings().seed == 0
    (tmp_path / "promptloop.toml").write_text(
        'seed = 1\nbase_model = "from-toml"\nmax_prompt_chars = 500\n[generation]\ntemperature = 0.3\n')
    s = Settings()
    assert (s.seed, s.base_model, s.max_prompt_chars, s.generation.temperature) == (1, "from-toml", 500, 0.3)
    monkeypatch.setenv("PROMPTLOOP_SEED", "2")
    monkeypatch.setenv("PROMPTLOOP_GENERATION__TEMPERATURE", "0.5")
    s = Settings()
    assert (s.seed, s.base_model, s.generation.temperature) == (2, "from-toml", 0.5)
    s = load_settings(seed=3, base_model=None)  # None = flag not given
    assert (s.seed, s.base_model, s.max_prompt_chars) == (3, "from-toml", 500)


def test_home_and_database_url_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROMPTLOOP_HOME", str(tmp_path / "envhome"))
    assert Settings().database_url.endswith("envhome/promptloop.db")
    monkeypatch.setenv("PROMPTLOOP_DATABASE_URL", "postgresql+psycopg://u@localhost/pl")
    assert Settings().database_url == "postgresql+psycopg://u@localhost/pl"


def test_explicit_config_file_and_errors(tmp_path: Path):
    cfg = tmp_path / "other.toml"
    cfg.write_text("seed = 9\n")
    assert Settings(config_file=cfg).seed == 9
    with pytest.raises(FileNotFoundError, match="config file not found"):
        Settings(config_file=tmp_path / "missing.toml")
    with pytest.raises(ValidationError, match="device"):
        Settings(device="tpu")
    with pytest.raises(ValidationError, match="target_words_min"):
        Settings(rewrite={"target_words_min": 200, "target_words_max": 100})
    with pytest.raises(ValidationError, match="Extra inputs"):
        Settings(not_a_setting=1)


def test_append_report_writes_jsonl_under_home(tmp_path: Path):
    import json

    s = Settings(home=tmp_path / "h")
    path = s.append_report("bench_x", {"speedup": 2.0})
    s.append_report("bench_x", {"speedup": 3.0})
    assert path.parent == s.reports_dir
    assert [json.loads(x)["speedup"] for x in path.read_text().splitlines()] == [2.0, 3.0]


def test_set_overrides_one_field_and_keeps_the_rest_of_its_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "promptloop.toml").write_text('[critic]\nuse_llm = false\nllm_retries = 3\n[judge.weights]\nharmless = 0.5\n')
    monkeypatch.setenv("PROMPTLOOP_GENERATION__N", "3")
    s = load_settings(home=tmp_path, assignments=["critic.llm_max_new_tokens=48", "judge.weights.length_fit=0.2",
                                                  "sampling.critic.stop=[\"}\"]", "backends.critic.kind=transformers",
                                                  "generation.temperature=0.5"])
    assert s.critic.llm_max_new_tokens == 48 and s.critic.use_llm is False and s.critic.llm_retries == 3  # TOML kept
    assert s.judge.weights["length_fit"] == 0.2 and s.judge.weights["harmless"] == 0.5
    assert s.sampling.critic.stop == ["}"] and s.backend_for("critic").kind == "transformers"
    assert s.generation.n == 3 and s.generation.temperature == 0.5  # env kept, flag applied
    assert load_settings(home=tmp_path, assignments=["web.token=abc"]).web.token.get_secret_value() == "abc"


@pytest.mark.parametrize(("pair", "message"), [
    ("critic.llm_max_new_token=48", "critic has no field 'llm_max_new_token'"),
    ("crtic.use_llm=false", "settings has no field 'crtic'"),
    ("backends.critic.kindx=1", "backends.critic has no field 'kindx'"),
    ("generation.n", "--set expects SECTION.FIELD=VALUE, got 'generation.n'"),
])
def test_set_names_a_mistyped_path(tmp_path: Path, pair: str, message: str):
    with pytest.raises(ValueError, match=message):
        load_settings(home=tmp_path, assignments=[pair])
    with pytest.raises(ValidationError, match="generation.n"):
        load_settings(home=tmp_path, assignments=["generation.n=lots"])
