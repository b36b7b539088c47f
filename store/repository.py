"""Idempotent writes: inserting a row whose content hash exists returns the stored row.

Each helper computes the row's identity (its content hash) from what makes it
the same thing twice, e.g. a candidate is the same if the prompt, model
version, origin and text are; sampling params or timestamps do not matter.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, select

from promptloop.errors import PromptloopError
from promptloop.store.engine import session_scope
from promptloop.store.hashing import content_hash, normalize_text, prompt_hash
from promptloop.store.models import (
    Candidate,
    Critique,
    Evaluation,
    ModelVersion,
    PreferencePair,
    Prompt,
    Reward,
    Round,
    SafetyVerdict,
    SFTExample,
    Split,
    Video,
)

T = TypeVar("T", bound=SQLModel)


def get_or_insert(session: Session, table: type[T], where: Any, /, **fields: Any) -> tuple[T, bool]:
    """Return (row, created) for the row matching ``where`` (a unique key), inserting ``fields`` if none.

    A concurrent insert of the same key (another worker) fails the savepoint
    on the unique constraint and is re-read, so callers never see the race.
    """
    existing = session.exec(select(table).where(where)).first()
    if existing is not None:
        return existing, False
    row = table(**fields)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = session.exec(select(table).where(where)).first()
        if existing is None:
            raise
        return existing, False
    return row, True


def get_or_create(session: Session, table: type[T], key: str, /, **fields: Any) -> tuple[T, bool]:
    """Return (row, created) by content hash."""
    return get_or_insert(session, table, table.content_hash == key, content_hash=key, **fields)


def add_prompt(session: Session, text: str, *, source: str = "user", split: str = "train",
               category: str | None = None, harmful: bool | None = None, **fields: Any) -> tuple[Prompt, bool]:
    return get_or_create(session, Prompt, prompt_hash(text), text=normalize_text(text), source=source,
                         split=split, category=category, harmful=harmful, **fields)


def add_candidate(session: Session, prompt_id: int, text: str, *, model_version_id: int | None = None,
                  round_id: int | None = None, origin: str = "sample", sampling_params: dict | None = None,
                  lineage: dict | None = None) -> tuple[Candidate, bool]:
    # a teacher's rewrite is the same row whichever collection meets it again, and two teachers never share one
    who = [(lineage or {}).get("teacher")] if origin == "teacher" else []
    key = content_hash("candidate", prompt_id, model_version_id, round_id, origin, text.strip(), *who)
    return get_or_create(session, Candidate, key, prompt_id=prompt_id, text=text.strip(),
                         model_version_id=model_version_id, round_id=round_id, origin=origin,
                         sampling_params=sampling_params or {}, lineage=lineage or {})


def add_critique(session: Session, candidate_id: int, critic_id: str, *, harmless: float, accurate: float,
                 helpful: float, issues: list[str] | None = None, suggestion: str | None = None,
                 fallback: bool = False) -> tuple[Critique, bool]:
    key = content_hash("critique", candidate_id, critic_id)
    return get_or_create(session, Critique, key, candidate_id=candidate_id, critic_id=critic_id,
                         harmless=harmless, accurate=accurate, helpful=helpful, issues=issues or [],
                         suggestion=suggestion, fallback=fallback)


def add_verdict(session: Session, text: str, guard_id: str, *, safe: bool, action: str,
                categories: dict[str, float] | None = None, reason: str | None = None,
                prompt_id: int | None = None, candidate_id: int | None = None) -> tuple[SafetyVerdict, bool]:
    key = content_hash("verdict", guard_id, prompt_id, candidate_id, normalize_text(text))
    return get_or_create(session, SafetyVerdict, key, text=text, guard_id=guard_id, safe=safe, action=action,
                         categories=categories or {}, reason=reason, prompt_id=prompt_id,
                         candidate_id=candidate_id)


def add_reward(session: Session, judge: str, dimension: str, score: float | None, *,
               candidate_id: int | None = None, video_id: int | None = None,
               details: dict | None = None) -> tuple[Reward, bool]:
    if candidate_id is None and video_id is None:
        raise ValueError("a reward belongs to a candidate or a video")
    key = content_hash("reward", candidate_id, video_id, judge, dimension)
    return get_or_create(session, Reward, key, judge=judge, dimension=dimension, score=score,
                         candidate_id=candidate_id, video_id=video_id, details=details or {})


def add_video(session: Session, cache_key: str, **fields: Any) -> tuple[Video, bool]:
    return get_or_create(session, Video, cache_key, **fields)


def add_sft_example(session: Session, prompt_id: int, target: str, *, status: str = "accepted",
                    source: str = "vpo", round_id: int | None = None, **fields: Any) -> tuple[SFTExample, bool]:
    """Idempotent within a round; a later round that reaches the same target stores its own row (#17)."""
    key = content_hash("sft", prompt_id, round_id, source, normalize_text(target))
    return get_or_create(session, SFTExample, key, prompt_id=prompt_id, target=target.strip(), status=status,
                         source=source, round_id=round_id, **fields)


def add_pair(session: Session, prompt_id: int, chosen_id: int, rejected_id: int, *, margin: float,
             feedback_level: str = "text", **fields: Any) -> tuple[PreferencePair, bool]:
    if chosen_id == rejected_id:
        raise ValueError("a preference pair needs two different candidates")
    key = content_hash("pair", prompt_id, chosen_id, rejected_id, feedback_level)
    return get_or_create(session, PreferencePair, key, prompt_id=prompt_id, chosen_id=chosen_id,
                         rejected_id=rejected_id, margin=margin, feedback_level=feedback_level, **fields)


def get_or_create_version(session: Session, name: str, **fields: Any) -> tuple[ModelVersion, bool]:
    """Model versions are keyed by their unique name rather than a hash."""
    return get_or_insert(session, ModelVersion, ModelVersion.name == name, name=name, **fields)


def evaluation_key(system: str, bench: str, prompts: list[str], eval_settings: dict) -> str:
    return content_hash("evaluation", system, bench, [normalize_text(p) for p in prompts], eval_settings)


def find_evaluation(session: Session, system: str, bench: str, prompts: list[str],
                    eval_settings: dict) -> Evaluation | None:
    key = evaluation_key(system, bench, prompts, eval_settings)
    return session.exec(select(Evaluation).where(Evaluation.content_hash == key)).first()


def add_evaluation(session: Session, system: str, bench: str, prompts: list[str], eval_settings: dict,
                   **fields: Any) -> tuple[Evaluation, bool]:
    """Same system, same prompts, same eval settings = the same evaluation (a cache hit, not a new row)."""
    return get_or_create(session, Evaluation, evaluation_key(system, bench, prompts, eval_settings), system=system,
                         bench=bench, n_prompts=len(prompts), **fields)


def store_traffic(engine: Engine, prompts: list[tuple[str, str | None]], *, client: str = "local") -> int:
    """Prompts apps send through the rewrite graph, as (text, refusal reason or None), from ``client``.

    Accepted ones become training prompts (source 'traffic', split train);
    refused ones (the guard, the injection check) are kept in split
    'quarantine' with their reason, visible and never trained on. A prompt
    already in the store (a shipped eval prompt, say) keeps its row and
    split, so traffic never leaks into the held-out set. Returns how many were new.
    """
    new = 0
    with session_scope(engine) as s:
        for text, reason in dict(p for p in prompts if p[0] and p[0].strip()).items():
            _, created = add_prompt(s, text, source="traffic", split=Split.quarantine if reason else Split.train,
                                    client=client, quarantine=reason)
            new += created
    return new


def select_prompts(engine: Engine, split: str, limit: int | None, source: str | None = None) -> list[Prompt]:
    q = select(Prompt).where(Prompt.split == split).order_by(Prompt.id)
    if source:
        q = q.where(Prompt.source == source)
    if limit:
        q = q.limit(limit)
    with Session(engine) as s:
        rows = list(s.exec(q))
    if not rows:
        raise PromptloopError(f"no prompts in split '{split}'" + (f" from source '{source}'" if source else "")
                              + "; run `promptloop init` or `promptloop prompts import`")
    return rows


def spaced(n_total: int, limit: int | None) -> list[int]:
    """``limit`` indices evenly spaced over ``range(n_total)`` (all of them without a limit): a subset that
    keeps every part of a file its rows are ordered by (categories, VBench dimensions)."""
    if not limit or limit >= n_total:
        return list(range(n_total))
    return sorted({int(i * n_total / limit) for i in range(limit)})


def select_harmful(engine: Engine, split: str, limit: int) -> list[Prompt]:
    """The harmful prompts of ``split`` (red-team rows), ``limit`` of them evenly spaced over the file's order,
    so every category is represented."""
    with Session(engine) as s:
        rows = list(s.exec(select(Prompt).where(Prompt.split == split, Prompt.harmful == True)  # noqa: E712
                           .order_by(Prompt.id)))
    if not rows:
        raise PromptloopError(f"no harmful prompts in split '{split}'; run `promptloop init` or import a red-team "
                              "file with a harmful column")
    return [rows[i] for i in spaced(len(rows), limit)]


def ensure_round(engine: Engine, index: int) -> int:
    with session_scope(engine) as s:
        row, _ = get_or_insert(s, Round, Round.index == index, index=index, stage="collect")
        return row.id
