"""The error promise, property-tested: whatever bytes, rows, paths or URLs a user hands the CLI, it either
succeeds or prints one line and exits 2 with the store unchanged; never a traceback, never exit 1.

The CLI runs in-process (``promptloop.cli.main``, the same handler the console script uses) so hypothesis can
try many inputs in seconds; tests/test_cli.py covers the same paths through a real subprocess.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from helpers import invoke_cli as invoke
from helpers import table_snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptloop.config import Settings
from promptloop.services import Services
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope

PROPERTY = settings(max_examples=int(os.environ.get("PROMPTLOOP_TEST_EXAMPLES", "25")), deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_promise(code: int, err: str, before: dict, engine) -> None:
    """Exit 0, or exit 2 with exactly one line that starts with 'error:' and the store as it was."""
    assert code in (0, 2), f"exit {code}: {err}"
    assert "Traceback" not in err
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), err
        assert table_snapshot(engine) == before


@pytest.fixture(scope="module")
def store():
    """One initialised home with a prompt, a candidate and a video to rate (module-wide: hypothesis reuses it)."""
    old = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PROMPTLOOP_")}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        rt = Services(Settings(home=home))
        with session_scope(rt.engine) as s:
            p, _ = repo.add_prompt(s, "a red kite over a beach")
            c, _ = repo.add_candidate(s, p.id, "A red kite climbs over a windy beach at noon, wide shot.")
            repo.add_sft_example(s, p.id, c.text, candidate_id=c.id)
            repo.add_video(s, "k0", renderer="synthetic", model="synthetic clip", seed=0, path=None, candidate_id=c.id)
        yield home, rt.engine, Path(tmp)
    os.environ.update(old)


SUFFIXES = st.sampled_from([".txt", ".jsonl", ".csv", ".json", ".parquet", ""])


@PROPERTY
@given(payload=st.binary(max_size=400), suffix=SUFFIXES)
def test_prompts_import_random_bytes(store, payload: bytes, suffix: str):
    home, engine, tmp = store
    path = tmp / f"in{suffix}"
    path.write_bytes(payload)
    before = table_snapshot(engine)
    code, _, err = invoke("--home", str(home), "prompts", "import", str(path), "--split", "train")
    assert_promise(code, err, before, engine)


CELL = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
                 st.lists(st.integers(), max_size=2))
ROW = st.fixed_dictionaries({}, optional={k: CELL for k in ("video_id", "candidate_id", "rater", "dimension",
                                                           "score", "rationale", "extra")})


@PROPERTY
@given(rows=st.lists(ROW, min_size=1, max_size=4), as_csv=st.booleans())
def test_ratings_import_random_rows(store, rows: list[dict], as_csv: bool):
    home, engine, tmp = store
    if as_csv:
        import csv

        path = tmp / "ratings.csv"
        cols = sorted({k for r in rows for k in r}) or ["video_id"]
        with path.open("w", newline="", encoding="utf-8", errors="surrogatepass") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    else:
        path = tmp / "ratings.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8", errors="surrogatepass")
    before = table_snapshot(engine)
    code, _, err = invoke("--home", str(home), "ratings", "import", str(path))
    assert_promise(code, err, before, engine)


@PROPERTY
@given(kind=st.sampled_from(["sft", "dpo", "kto", ""]), fmt=st.sampled_from(["jsonl", "hf", "csv"]),
       name=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), min_size=1, max_size=12),
       under_file=st.booleans())
def test_export_random_targets(store, kind: str, fmt: str, name: str, under_file: bool):
    home, engine, tmp = store
    blocker = tmp / "a-file"
    blocker.write_text("x")
    target = (blocker / name) if under_file else (tmp / "exports" / name)
    before = table_snapshot(engine)
    code, _, err = invoke("--home", str(home), "data", "export", kind, str(target), "--format", fmt)
    assert_promise(code, err, before, engine)


URL = st.one_of(
    st.text(max_size=40),
    st.builds(lambda scheme, rest: f"{scheme}://{rest}",
              st.sampled_from(["sqlite", "postgresql", "postgresql+psycopg", "mysql", "foo", "sqlite+pysqlite"]),
              st.text(max_size=30)),
    st.builds(lambda pw, port: f"postgresql+psycopg://u:{pw}@127.0.0.1:{port}/db",
              st.text(st.characters(whitelist_categories=["L", "N"]), min_size=1, max_size=8),
              st.integers(1, 9)))


@PROPERTY
@given(url=URL)
def test_database_url_random(store, url: str):
    """A read command on any URL: one line and exit 2 unless it names a working database, and no secret shown."""
    home, engine, _ = store
    before = table_snapshot(engine)
    code, out, err = invoke("--home", str(home), "--database-url", url, "prompts", "list", "--json")
    assert_promise(code, err, before, engine)
    if code == 2 and "://u:" in url:
        password = url.split("://u:", 1)[1].split("@", 1)[0]
        assert f":{password}@" not in err


def test_known_failures_are_one_line(store, tmp_path):
    """The failure classes #17 names, each checked by its message (the property tests check the shape)."""
    home, engine, tmp = store
    before = table_snapshot(engine)
    huge = tmp_path / "huge.csv"
    huge.write_text("prompt\n\"" + "x" * 200_000 + "\"\n")
    code, _, err = invoke("--home", str(home), "prompts", "import", str(huge))
    assert code == 2 and "field limit" in err, err
    code, _, err = invoke("--home", str(home), "--database-url", "postgresql+psycopg://u:hunter2@127.0.0.1:1/x",
                          "prompts", "list")
    assert code == 2 and "database unreachable" in err and "hunter2" not in err, err
    code, _, err = invoke("--home", str(home), "--database-url", "not a url", "prompts", "list")
    assert code == 2 and "malformed database URL" in err, err
    code, _, err = invoke("--home", str(home), "--database-url", f"sqlite:///{tmp_path}/typo.db", "prompts", "list")
    assert code == 2 and "no promptloop database" in err and not (tmp_path / "typo.db").exists(), err
    (tmp_path / "f").write_text("x")
    code, _, err = invoke("--home", str(home), "data", "export", "sft", str(tmp_path / "f" / "out.jsonl"))
    assert code == 2 and "cannot use" in err, err
    assert table_snapshot(engine) == before


def test_describe_maps_families_and_leaves_bugs_alone():
    import csv

    from sqlalchemy.exc import OperationalError

    from promptloop.errors import PromptloopError, describe

    assert describe(PromptloopError("f.csv: 2 invalid row(s)\n  line 2: empty\n  line 3: empty")) == \
        "f.csv: 2 invalid row(s); line 2: empty; line 3: empty"
    assert describe(OSError(28, "No space left on device")) == "cannot use: No space left on device"
    assert describe(csv.Error("field larger than field limit (131072)")).startswith("malformed CSV")
    assert describe(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")).startswith("not UTF-8 text")
    op = OperationalError("SELECT 1", {}, Exception("could not connect to postgresql://a:pw@h/db\nDETAIL: x"))
    assert describe(op) == "database unreachable or unusable: could not connect to postgresql://a:***@h/db"
    assert describe(ValueError("a bug")) is None and describe(KeyError("k")) is None  # tracebacks stay for bugs
