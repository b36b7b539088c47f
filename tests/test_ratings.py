"""Human ratings: import (validated, all or nothing), export, and re-import idempotency."""

import csv
import json

import pytest
from helpers import table_snapshot
from sqlmodel import Session, select

from promptloop.config import RatingSettings
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.importer import ImportValidationError
from promptloop.store.models import HumanRating
from promptloop.store.ratings import export_ratings, import_ratings


@pytest.fixture
def videos(engine):
    with session_scope(engine) as s:
        p, _ = repo.add_prompt(s, "a heron on a pond")
        c, _ = repo.add_candidate(s, p.id, "A grey heron lands on a still pond at dawn.")
        rows = [repo.add_video(s, f"k{i}", renderer="diffusers", model="tiny", seed=i, path=f"/v/{i}.mp4",
                               candidate_id=c.id)[0] for i in range(2)]
        return [r.id for r in rows], c.id


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_import_export_round_trip(engine, videos, tmp_path):
    (v1, v2), cid = videos
    rows = [{"video_id": v1, "rater": "ana", "dimension": "semantic_consistency", "score": 4, "rationale": "heron ok"},
            {"video_id": v1, "rater": "ana", "dimension": "motion_smoothness", "score": 2, "rationale": "jitter"},
            {"video_id": v2, "rater": "bo", "dimension": "video_fidelity", "score": 5, "rationale": "sharp"}]
    cfg = RatingSettings()
    assert import_ratings(engine, _jsonl(tmp_path / "r.jsonl", rows), cfg) == {"new": 3, "updated": 0}
    out = tmp_path / "out.jsonl"
    assert export_ratings(engine, out) == 3
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported[1]["score"] == 2 and exported[1]["rationale"] == "jitter"
    assert exported[0]["prompt"] == "a heron on a pond" and exported[0]["video_path"] == "/v/0.mp4"
    # the export imports back unchanged (re-import updates, never duplicates); CSV works the same way
    assert import_ratings(engine, out, cfg) == {"new": 0, "updated": 3}
    csv_out = tmp_path / "out.csv"
    export_ratings(engine, csv_out)
    assert [r["rater"] for r in csv.DictReader(csv_out.open())] == ["ana", "ana", "bo"]
    changed = csv_out.read_text().replace(",2.0,", ",3.0,")
    (tmp_path / "changed.csv").write_text(changed)
    assert import_ratings(engine, tmp_path / "changed.csv", cfg) == {"new": 0, "updated": 3}
    with Session(engine) as s:
        ratings = s.exec(select(HumanRating).order_by(HumanRating.id)).all()
        assert [r.score for r in ratings] == [4.0, 3.0, 5.0] and len(ratings) == 3
        assert {(r.scale_min, r.scale_max) for r in ratings} == {(1.0, 5.0)}


def test_invalid_rows_are_reported_and_nothing_is_stored(engine, videos, tmp_path):
    (v1, _), _ = videos
    good = {"video_id": v1, "rater": "ana", "dimension": "video_fidelity", "score": 3, "rationale": "fine"}
    bad = [good,
           {**good, "video_id": 999},
           {**good, "rater": "bo", "score": 7},
           {**good, "rater": "cy", "rationale": ""},
           {**good, "rater": "di", "dimension": "aesthetics"},
           {**good, "rater": "ed", "score": "great"},
           good]
    before = table_snapshot(engine)
    with pytest.raises(ImportValidationError) as err:
        import_ratings(engine, _jsonl(tmp_path / "bad.jsonl", bad), RatingSettings())
    msg = str(err.value)
    for expected in ("line 2: unknown video 999", "line 3: score 7 is outside the scale 1-5",
                     "line 4: missing rationale", "line 5: unknown dimension 'aesthetics'",
                     "line 6: score must be a number", "line 7: the same rating as line 1", "nothing was imported"):
        assert expected in msg
    assert table_snapshot(engine) == before
    # rationale optional and another scale when configured
    cfg = RatingSettings(require_rationale=False, scale_min=0, scale_max=10)
    assert import_ratings(engine, _jsonl(tmp_path / "ok.jsonl", [{**good, "score": 9, "rationale": None}]),
                          cfg) == {"new": 1, "updated": 0}


def test_fractional_or_boolean_scores_and_float_ids_are_rejected(engine, videos, tmp_path):
    """int() and float() would take 1.7, true and 3.5 quietly (#17): each is a row error, nothing is stored."""
    (v1, _), _ = videos
    good = {"video_id": v1, "rater": "ana", "dimension": "video_fidelity", "score": 3, "rationale": "fine"}
    bad = [{**good, "score": 3.5}, {**good, "rater": "bo", "score": True}, {**good, "rater": "cy", "video_id": 1.7},
           {**good, "rater": "di", "video_id": float(v1)}, {**good, "rater": "ed", "video_id": True},
           {**good, "rater": "fa", "video_id": str(v1), "score": "4"}]
    before = table_snapshot(engine)
    with pytest.raises(ImportValidationError) as err:
        import_ratings(engine, _jsonl(tmp_path / "bad.jsonl", bad), RatingSettings())
    msg = str(err.value)
    assert "line 1: score must be a whole point of the scale, got 3.5" in msg
    assert "line 2: score must be a number, got True" in msg
    for line in (3, 4, 5):
        assert f"line {line}: video_id and candidate_id must be integers" in msg
    assert "line 6" not in msg  # "7" and "4" as strings are fine (CSV gives strings)
    assert table_snapshot(engine) == before
