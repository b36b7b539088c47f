import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from helpers import table_counts
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, select

from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.migrate import current_revision, head_revision, upgrade
from promptloop.store.models import (
    ALL_TABLES,
    Candidate,
    HumanRating,
    ModelCapability,
    ModelVersion,
    PreferencePair,
    Prompt,
    Round,
    TraceEvent,
    WorkItem,
)


def test_migrations_create_exactly_the_models_schema(engine):
    assert current_revision(engine) == head_revision() == "0006"
    names = set(inspect(engine).get_table_names())
    assert {t.__tablename__ for t in ALL_TABLES} <= names
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    assert upgrade(engine) == "0006"  # running again is a no-op


def test_foreign_keys_enforced_and_sqlite_in_wal(engine):
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    with pytest.raises(IntegrityError):
        with session_scope(engine) as s:
            repo.add_candidate(s, prompt_id=424242, text="orphan")
    assert table_counts(engine)["candidates"] == 0


def _populate(s: Session) -> dict:
    p, _ = repo.add_prompt(s, "  a cat   playing piano ", source="test", split="eval", category="animals")
    rnd = Round(index=0)
    s.add(rnd)
    s.flush()
    base, _ = repo.get_or_create_version(s, "base", base_model="smollm2-135m-instruct", algorithm="base")
    v1, _ = repo.get_or_create_version(s, "r0-sft", base_model="smollm2-135m-instruct", parent_id=base.id,
                                       algorithm="sft", adapter_path="/a/r0", round_id=rnd.id,
                                       metrics={"loss": 1.5}, data_provenance={"rounds": [0]})
    c1, _ = repo.add_candidate(s, p.id, "A fluffy cat presses piano keys.", model_version_id=v1.id, round_id=rnd.id,
                               sampling_params={"temperature": 0.8})
    c2, _ = repo.add_candidate(s, p.id, "A dog runs on a beach.", model_version_id=v1.id, round_id=rnd.id)
    repo.add_critique(s, c1.id, "principle-critic", harmless=1.0, accurate=0.9, helpful=0.7, issues=["short"])
    repo.add_verdict(s, c1.text, "guard", safe=True, action="allow", categories={"violence": 0.01}, candidate_id=c1.id)
    vid, _ = repo.add_video(s, "cache-key-1", candidate_id=c1.id, renderer="tiny", model="tiny-cogvideox", seed=1,
                            path="/v/1.mp4", frames=8, fps=8.0, width=64, height=64)
    repo.add_reward(s, "text-judge", "accuracy", 0.9, candidate_id=c1.id)
    repo.add_reward(s, "video-judge", "flicker", 0.2, video_id=vid.id, details={"frames": 8})
    repo.add_sft_example(s, p.id, c1.text, candidate_id=c1.id, round_id=rnd.id, critique_trail=[{"step": 0}])
    repo.add_pair(s, p.id, c1.id, c2.id, margin=0.4, round_id=rnd.id, chosen_scores={"total": 0.9},
                  rejected_scores={"total": 0.5})
    s.add(HumanRating(video_id=vid.id, rater="ann", dimension="motion", score=4, rationale="smooth"))
    s.add(TraceEvent(thread_id="t1", graph="rewrite", node="guard", input={"prompt": p.text}, output={"safe": True}))
    repo.add_evaluation(s, "r0-sft", "eval", ["a cat playing piano"], {"greedy": True}, model_version_id=v1.id,
                        metrics={"judge_total": 0.7})
    s.add(WorkItem(job="collect-sft-r0", prompt_id=p.id))
    s.add(ModelCapability(model="transformers:smollm2-135m-instruct", capability="json_critique", probe="p",
                          asked=12, valid=2, capable=False))
    return {"prompt": p.id, "c1": c1.id, "c2": c2.id, "v1": v1.id}


def test_round_trip_every_table(engine):
    with session_scope(engine) as s:
        ids = _populate(s)
    counts = table_counts(engine)
    assert all(n >= 1 for n in counts.values()), counts
    with Session(engine) as s:
        p = s.get(Prompt, ids["prompt"])
        assert p.text == "a cat playing piano" and p.split == "eval" and p.created_at is not None
        v1 = s.get(ModelVersion, ids["v1"])
        assert v1.metrics == {"loss": 1.5} and v1.parent_id is not None and v1.adapter_path == "/a/r0"
        pair = s.exec(select(PreferencePair)).one()
        assert (pair.chosen_id, pair.rejected_id, pair.margin) == (ids["c1"], ids["c2"], 0.4)
        assert pair.chosen_scores["total"] == 0.9
        assert s.exec(select(TraceEvent)).one().output == {"safe": True}


def test_writes_are_idempotent(engine):
    with session_scope(engine) as s:
        _populate(s)
    before = table_counts(engine)
    with session_scope(engine) as s:
        p, created = repo.add_prompt(s, "a cat playing piano")  # whitespace-normalised duplicate
        assert not created
        c, created = repo.add_candidate(s, p.id, "A fluffy cat presses piano keys.", model_version_id=2, round_id=1)
        assert not created
        pair, created = repo.add_pair(s, p.id, 1, 2, margin=0.99, round_id=1)
        assert not created and pair.margin == 0.4  # the stored row wins
        _, created = repo.add_critique(s, c.id, "principle-critic", harmless=0, accurate=0, helpful=0)
        assert not created
        _, created = repo.add_reward(s, "text-judge", "accuracy", 0.1, candidate_id=c.id)
        assert not created
    # Only HumanRating/TraceEvent rows are appended by _populate without hashes; nothing else grew.
    assert table_counts(engine) == before


def test_concurrent_duplicate_insert_returns_existing(engine):
    eng = engine
    with Session(eng) as a, Session(eng) as b:
        pa, ca = repo.add_prompt(a, "same prompt")
        a.commit()
        pb, cb = repo.add_prompt(b, "same prompt")
        assert (ca, cb) == (True, False) and pa.id == pb.id


def test_pair_and_reward_validation(engine):
    with session_scope(engine) as s:
        p, _ = repo.add_prompt(s, "x")
        c, _ = repo.add_candidate(s, p.id, "y")
        with pytest.raises(ValueError, match="two different candidates"):
            repo.add_pair(s, p.id, c.id, c.id, margin=1.0)
        with pytest.raises(ValueError, match="candidate or a video"):
            repo.add_reward(s, "j", "d", 1.0)


def test_candidate_identity_includes_model_version(engine):
    with session_scope(engine) as s:
        p, _ = repo.add_prompt(s, "x")
        v, _ = repo.get_or_create_version(s, "v", base_model="b")
        a, _ = repo.add_candidate(s, p.id, "same text")
        b, created = repo.add_candidate(s, p.id, "same text", model_version_id=v.id)
        assert created and a.id != b.id
    with Session(engine) as s:
        assert len(s.exec(select(Candidate)).all()) == 2


def test_traces_fold_each_items_changes_per_graph_instance():
    """Traces hold what each node changed; the items are rebuilt per graph instance (a part) in run order."""
    from promptloop.store.models import TraceEvent
    from promptloop.store.traces import fold_items

    def ev(ns: str, items: list[dict]) -> TraceEvent:
        return TraceEvent(thread_id="t", graph="g", node="n", input={"checkpoint_ns": ns}, output={"items": items})

    events = [ev("guard_input:1", [{"i": 0, "prompt": "a", "verdict": "ok"}, {"i": 1, "prompt": "b"}]),
              ev("rewrite:2", [{"i": 0, "prompt": "a", "candidates": ["x"]}]),
              ev("part:3|rewrite:4", [{"i": 0, "prompt": "c", "candidates": ["y"]}]),
              ev("part:3|critique:5", [{"i": 0, "prompt": "c", "rewards": [1]}])]
    assert fold_items(events) == [{"i": 0, "prompt": "a", "verdict": "ok", "candidates": ["x"]},
                                  {"i": 1, "prompt": "b"},
                                  {"i": 0, "prompt": "c", "candidates": ["y"], "rewards": [1]}]
