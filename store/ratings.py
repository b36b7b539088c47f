"""Human ratings of videos (LiFT): import, validation and export.

A rating is (video or candidate, rater, dimension, score on the declared
scale, rationale). Import reads the whole file first and stores nothing
unless every row is valid; the report names each bad row (unknown video,
unknown dimension, score off the scale, missing rationale, the same rating
twice). Re-importing a file updates the ratings it already holds (one row
per video, rater and dimension), so nothing is counted twice.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.config import RatingSettings
from promptloop.fileio import RowError, read_records, write_jsonl
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.importer import ImportValidationError, PromptImportError
from promptloop.store.models import Candidate, HumanRating, Prompt, Video

FIELDS = ("video_id", "candidate_id", "rater", "dimension", "score", "rationale")


@dataclass
class RatingRow:
    line: int
    video_id: int | None
    candidate_id: int | None
    rater: str
    dimension: str
    score: float
    rationale: str | None


def _id(value: object) -> int | None:
    """An id as a JSON integer or a string of digits; 1.0, 1.7 and true are not ids (int() would take them)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or (
            isinstance(value, str) and not value.strip().isdigit()):
        raise ValueError(f"not an integer id: {value!r}")  # the row's error names the columns
    return int(value)


def _score(value: object) -> float:
    """A whole number on the rating scale: a Likert point, not a boolean and not a fraction (3.5)."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a score")
    score = float(value)  # TypeError / ValueError for what is no number at all
    if score == score and score not in (float("inf"), float("-inf")) and not score.is_integer():
        raise ValueError(f"score must be a whole point of the scale, got {score:g}")
    return score


def validate(session: Session, records: list[tuple[int, dict]], cfg: RatingSettings) -> tuple[list[RatingRow],
                                                                                                list[RowError]]:
    rows, errors, seen = [], [], {}
    ids = {"video_id": set(), "candidate_id": set()}
    for _, rec in records:
        for k in ids:
            try:
                if _id(rec.get(k)) is not None:
                    ids[k].add(_id(rec.get(k)))
            except (TypeError, ValueError):
                pass
    videos = set(session.exec(select(Video.id).where(Video.id.in_(ids["video_id"])))) if ids["video_id"] else set()
    cands = set(session.exec(select(Candidate.id).where(Candidate.id.in_(ids["candidate_id"])))) \
        if ids["candidate_id"] else set()
    for line, rec in records:
        problems = []
        try:
            vid, cid = _id(rec.get("video_id")), _id(rec.get("candidate_id"))
        except (TypeError, ValueError):
            errors.append(RowError(line, "video_id and candidate_id must be integers"))
            continue
        if vid is None and cid is None:
            problems.append("needs a video_id (or a candidate_id)")
        if vid is not None and vid not in videos:
            problems.append(f"unknown video {vid}")
        if cid is not None and cid not in cands:
            problems.append(f"unknown candidate {cid}")
        rater = str(rec.get("rater") or "").strip()
        if not rater:
            problems.append("missing rater")
        dim = str(rec.get("dimension") or "").strip()
        if dim not in cfg.dimensions:
            problems.append(f"unknown dimension '{dim}' (expected one of {', '.join(cfg.dimensions)})")
        try:
            score = _score(rec.get("score"))
            if not cfg.scale_min <= score <= cfg.scale_max:
                problems.append(f"score {score:g} is outside the scale {cfg.scale_min:g}-{cfg.scale_max:g}")
        except ValueError as exc:
            score = float("nan")
            problems.append(str(exc) if "whole point" in str(exc) else
                            f"score must be a number, got {rec.get('score')!r}")
        except TypeError:
            score = float("nan")
            problems.append(f"score must be a number, got {rec.get('score')!r}")
        rationale = str(rec.get("rationale") or "").strip() or None
        if cfg.require_rationale and rationale is None:
            problems.append("missing rationale (ratings.require_rationale is on)")
        key = (vid, cid, rater, dim)
        if not problems and key in seen:
            problems.append(f"the same rating as line {seen[key]} (video, candidate, rater, dimension)")
        if problems:
            errors.append(RowError(line, "; ".join(problems)))
            continue
        seen[key] = line
        rows.append(RatingRow(line, vid, cid, rater, dim, score, rationale))
    return rows, errors


def import_ratings(engine: Engine, path: Path, cfg: RatingSettings) -> dict[str, int]:
    """All rows or none; returns counts of new and updated ratings."""
    records, errors = read_records(path)
    with Session(engine) as s:
        rows, more = validate(s, records, cfg)
    errors += more
    if errors:
        raise ImportValidationError(path, sorted(errors, key=lambda e: e.line))
    if not rows:
        raise PromptImportError(f"{path}: no ratings in the file")
    return save_ratings(engine, rows, cfg)


def save_ratings(engine: Engine, rows: list[RatingRow], cfg: RatingSettings) -> dict[str, int]:
    """Validated rows in one transaction: a new rating per (video, candidate, rater, dimension), else an update."""
    counts = {"new": 0, "updated": 0}
    with session_scope(engine) as s:
        for r in rows:
            where = ((HumanRating.video_id == r.video_id) if r.video_id is not None else HumanRating.video_id.is_(None)) \
                & ((HumanRating.candidate_id == r.candidate_id) if r.candidate_id is not None
                   else HumanRating.candidate_id.is_(None)) \
                & (HumanRating.rater == r.rater) & (HumanRating.dimension == r.dimension)
            row, created = repo.get_or_insert(s, HumanRating, where, video_id=r.video_id, candidate_id=r.candidate_id,
                                              rater=r.rater, dimension=r.dimension, score=r.score,
                                              scale_min=cfg.scale_min, scale_max=cfg.scale_max, rationale=r.rationale)
            if not created:
                row.score, row.rationale = r.score, r.rationale
                row.scale_min, row.scale_max = cfg.scale_min, cfg.scale_max
                s.add(row)
            counts["new" if created else "updated"] += 1
    return counts


def rating_rows(engine: Engine) -> list[dict]:
    """Every rating with its video's prompt context, oldest first (what export writes)."""
    with Session(engine) as s:
        q = (select(HumanRating, Video, Candidate, Prompt).join(Video, HumanRating.video_id == Video.id, isouter=True)
             .join(Candidate, Candidate.id == Video.candidate_id, isouter=True)
             .join(Prompt, Prompt.id == Candidate.prompt_id, isouter=True).order_by(HumanRating.id))
        out = []
        for h, v, c, p in s.exec(q):
            out.append({"video_id": h.video_id, "candidate_id": h.candidate_id, "rater": h.rater,
                        "dimension": h.dimension, "score": h.score, "scale_min": h.scale_min, "scale_max": h.scale_max,
                        "rationale": h.rationale, "created_at": h.created_at.isoformat(),
                        "video_path": v.path if v else None, "rewrite": c.text if c else None,
                        "prompt": p.text if p else None})
    return out


def export_ratings(engine: Engine, out: Path) -> int:
    rows = rating_rows(engine)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    if out.suffix.lower() == ".csv":
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else list(FIELDS))
            w.writeheader()
            w.writerows(rows)
    elif out.suffix.lower() == ".jsonl":
        write_jsonl(out, rows)
        return len(rows)
    else:
        raise PromptImportError(f"--out must end in .jsonl or .csv, got '{out.name}'")
    tmp.replace(out)
    return len(rows)


def rating_queue(engine: Engine, rater: str, dimensions: list[str]) -> tuple[list[int], int]:
    """(ids of rendered videos ``rater`` has not rated on every dimension, oldest first; how many videos in all)."""
    with Session(engine) as s:
        videos = list(s.exec(select(Video.id).where(Video.status == "ok", Video.path.is_not(None)).order_by(Video.id)))
        done: dict[int, set[str]] = {}
        for vid, dim in s.exec(select(HumanRating.video_id, HumanRating.dimension)
                               .where(HumanRating.rater == rater, HumanRating.dimension.in_(dimensions))):
            done.setdefault(vid, set()).add(dim)
    return [v for v in videos if not set(dimensions) <= done.get(v, set())], len(videos)


def video_context(engine: Engine, video_id: int) -> dict | None:
    """What a rater sees beside a video: the user's prompt, the text the video model rendered, the model."""
    with Session(engine) as s:
        v = s.get(Video, video_id)
        if v is None:
            return None
        c = s.get(Candidate, v.candidate_id) if v.candidate_id else None
        p = s.get(Prompt, c.prompt_id) if c else None
    rendered = c.text if c else (v.params or {}).get("prompt")
    return {"video_id": v.id, "prompt": p.text if p else rendered, "rendered": rendered, "model": v.model,
            "seed": v.seed, "path": v.path, "frames": v.frames, "fps": v.fps}
