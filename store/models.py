"""SQLModel tables for the whole design.

Every row that a step of the loop can produce twice (after a crash, on a
re-run) carries a ``content_hash`` with a unique constraint, so writes are
idempotent: the repository looks the hash up before inserting. Lists and
score maps live in JSON columns; large artifacts (videos, adapters) are paths.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Split(StrEnum):
    train = "train"
    eval = "eval"
    test = "test"
    redteam = "redteam"
    quarantine = "quarantine"  # app traffic refused for training (guard or injection check); never trained on


class Origin(StrEnum):
    sample = "sample"
    refine = "refine"
    evolve = "evolve"
    baseline = "baseline"
    imported = "imported"
    teacher = "teacher"  # written by a teacher (a served model or a recorded set); lineage names it
    unsanitized = "unsanitized"  # a rewrite of a flagged request as the user wrote it (a safety pair's rejected side)
    refusal = "refusal"  # the guard's refusal of a flagged request (a safety pair's rejected side when no unsafe rewrite)


class VersionStatus(StrEnum):
    candidate = "candidate"
    champion = "champion"
    rejected = "rejected"
    archived = "archived"


class FeedbackLevel(StrEnum):
    text = "text"
    video = "video"
    both = "both"


def _json(default: Any = None) -> Any:
    factory = (lambda: dict(default)) if isinstance(default, dict) else (lambda: list(default or []))
    return Field(default_factory=factory, sa_column=Column(JSON, nullable=False))


class Prompt(SQLModel, table=True):
    __tablename__ = "prompts"
    id: int | None = Field(default=None, primary_key=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    source: str = Field(default="user", index=True)
    split: str = Field(default=Split.train, index=True)
    category: str | None = Field(default=None, index=True)
    harmful: bool | None = Field(default=None, description="red-team label: harmful or benign look-alike")
    client: str | None = Field(default=None, index=True, description="traffic: the app that sent it")
    quarantine: str | None = Field(default=None, sa_column=Column(Text), description="traffic: why it is not "
                                   "trained on (split quarantine)")
    content_hash: str = Field(unique=True, index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Round(SQLModel, table=True):
    __tablename__ = "rounds"
    id: int | None = Field(default=None, primary_key=True)
    index: int = Field(unique=True)
    status: str = Field(default="running")
    stage: str | None = None
    notes: dict = _json({})
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_versions"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    base_model: str
    adapter_path: str | None = None
    parent_id: int | None = Field(default=None, foreign_key="model_versions.id")
    algorithm: str = Field(default="base", description="base | sft | dpo | ...")
    round_id: int | None = Field(default=None, foreign_key="rounds.id")
    status: str = Field(default=VersionStatus.candidate, index=True)
    metrics: dict = _json({})
    data_provenance: dict = _json({})
    created_at: datetime = Field(default_factory=utcnow)


class Candidate(SQLModel, table=True):
    __tablename__ = "candidates"
    id: int | None = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompts.id", index=True)
    model_version_id: int | None = Field(default=None, foreign_key="model_versions.id", index=True)
    round_id: int | None = Field(default=None, foreign_key="rounds.id", index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    origin: str = Field(default=Origin.sample)
    sampling_params: dict = _json({})
    lineage: dict = _json({})
    content_hash: str = Field(unique=True, index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Critique(SQLModel, table=True):
    __tablename__ = "critiques"
    id: int | None = Field(default=None, primary_key=True)
    candidate_id: int = Field(foreign_key="candidates.id", index=True)
    critic_id: str
    harmless: float
    accurate: float
    helpful: float
    issues: list = _json([])
    suggestion: str | None = Field(default=None, sa_column=Column(Text))
    fallback: bool = Field(default=False, description="LLM critique failed; deterministic checks only")
    content_hash: str = Field(unique=True, index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class SafetyVerdict(SQLModel, table=True):
    __tablename__ = "safety_verdicts"
    id: int | None = Field(default=None, primary_key=True)
    prompt_id: int | None = Field(default=None, foreign_key="prompts.id", index=True)
    candidate_id: int | None = Field(default=None, foreign_key="candidates.id", index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    guard_id: str
    safe: bool
    action: str = Field(description="allow | sanitize | block")
    categories: dict = _json({})
    reason: str | None = Field(default=None, sa_column=Column(Text))
    content_hash: str = Field(unique=True, index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Video(SQLModel, table=True):
    __tablename__ = "videos"
    id: int | None = Field(default=None, primary_key=True)
    candidate_id: int | None = Field(default=None, foreign_key="candidates.id", index=True)
    renderer: str
    model: str
    seed: int
    params: dict = _json({})
    path: str | None = None
    thumbnail_path: str | None = None
    frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    status: str = Field(default="ok", description="ok | failed")
    error: str | None = Field(default=None, sa_column=Column(Text))
    content_hash: str = Field(unique=True, index=True, max_length=64, description="render cache key")
    created_at: datetime = Field(default_factory=utcnow)


class Reward(SQLModel, table=True):
    __tablename__ = "rewards"
    id: int | None = Field(default=None, primary_key=True)
    candidate_id: int | None = Field(default=None, foreign_key="candidates.id", index=True)
    video_id: int | None = Field(default=None, foreign_key="videos.id", index=True)
    judge: str
    dimension: str = Field(index=True)
    score: float | None = Field(default=None, description="None = dimension unavailable here")
    details: dict = _json({})
    content_hash: str = Field(unique=True, index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class SFTExample(SQLModel, table=True):
    __tablename__ = "sft_examples"
    id: int | None = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompts.id", index=True)
    candidate_id: int | None = Field(default=None, foreign_key="candidates.id")
    round_id: int | None = Field(default=None, foreign_key="rounds.id", index=True)
    target: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="accepted", index=True, description="accepted | rejected")
    reason: str | None = Field(default=None, sa_column=Column(Text))
    source: str = Field(default="vpo", description="vpo | evolve | import | teacher:NAME")
    critique_trail: list = _json([])
    content_hash: str = Field(unique=True, index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class PreferencePair(SQLModel, table=True):
    __tablename__ = "preference_pairs"
    id: int | None = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompts.id", index=True)
    chosen_id: int = Field(foreign_key="candidates.id")
    rejected_id: int = Field(foreign_key="candidates.id")
    round_id: int | None = Field(default=None, foreign_key="rounds.id", index=True)
    margin: float
    feedback_level: str = Field(default=FeedbackLevel.text)
    rule: str = Field(default="margin")
    chosen_scores: dict = _json({})
    rejected_scores: dict = _json({})
    content_hash: str = Field(unique=True, index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class HumanRating(SQLModel, table=True):
    __tablename__ = "human_ratings"
    __table_args__ = (UniqueConstraint("video_id", "candidate_id", "rater", "dimension", name="uq_rating"),)
    id: int | None = Field(default=None, primary_key=True)
    video_id: int | None = Field(default=None, foreign_key="videos.id", index=True)
    candidate_id: int | None = Field(default=None, foreign_key="candidates.id", index=True)
    rater: str
    dimension: str
    score: float
    scale_min: float = 1.0
    scale_max: float = 5.0
    rationale: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class TraceEvent(SQLModel, table=True):
    __tablename__ = "trace_events"
    id: int | None = Field(default=None, primary_key=True)
    thread_id: str = Field(index=True)
    run_id: str | None = Field(default=None, index=True)
    graph: str = Field(index=True)
    node: str
    model_version: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    duration_ms: float | None = None
    input: dict = _json({})
    output: dict = _json({})
    error: str | None = Field(default=None, sa_column=Column(Text))


class Evaluation(SQLModel, table=True):
    """One system's metrics on one prompt set: a model version, or a baseline (raw prompts, public rewrites).

    Keyed by (system, bench, prompt set, eval settings), so the loop compares a
    new version with the champion without evaluating the champion again.
    """

    __tablename__ = "evaluations"
    id: int | None = Field(default=None, primary_key=True)
    system: str = Field(index=True, description="model version name, or raw | public:<name>")
    model_version_id: int | None = Field(default=None, foreign_key="model_versions.id", index=True)
    bench: str = Field(index=True, description="eval | vbench | redteam ...")
    n_prompts: int
    metrics: dict = _json({})
    outputs_path: str | None = None
    content_hash: str = Field(unique=True, index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class WorkItem(SQLModel, table=True):
    """One prompt of a shared job (a collection several workers split between them).

    Workers claim pending items (``SELECT ... FOR UPDATE SKIP LOCKED`` on
    PostgreSQL) so no prompt is processed twice; a claim older than its lease
    is taken over, so a dead worker loses nothing.
    """

    __tablename__ = "work_items"
    __table_args__ = (UniqueConstraint("job", "prompt_id", name="uq_work_item"),)
    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(index=True)
    prompt_id: int = Field(foreign_key="prompts.id")
    status: str = Field(default="pending", index=True, description="pending | claimed | done")
    worker: str | None = None
    attempts: int = 0
    claimed_at: datetime | None = None
    done_at: datetime | None = None
    adapter: str | None = Field(default=None, description="the rewriter version the job samples with: a served "
                                "vLLM keeps it loaded while the job has unfinished items")


class ModelCapability(SQLModel, table=True):
    """What a chat model was measured able to do (e.g. answer the critique in valid JSON), once per store.

    Without it every new process probes again: with the embedded 135M model
    the critic's probe is a dozen critiques and re-asks, about a minute on
    two cores, before the breaker turns the LLM critique off. ``model``
    names the backend and model, ``probe`` the template and budget the
    verdict was measured with (a new template is measured again).
    """

    __tablename__ = "model_capabilities"
    __table_args__ = (UniqueConstraint("model", "capability", "probe", name="uq_model_capability"),)
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(index=True)
    capability: str
    probe: str = Field(max_length=64)
    asked: int
    valid: int
    capable: bool
    updated_at: datetime = Field(default_factory=utcnow)


ALL_TABLES = [
    Prompt, Round, ModelVersion, Candidate, Critique, SafetyVerdict, Video, Reward,
    SFTExample, PreferencePair, HumanRating, TraceEvent, Evaluation, WorkItem, ModelCapability,
]


class FinishedThread(SQLModel, table=True):
    """A graph run (LangGraph thread) that finished: a collection chunk, a rewrite, a loop.

    Recorded in the store, not only in the checkpointer, so finished work is skipped on a re-run even after
    ``promptloop db prune`` deleted the thread's checkpoints (``pruned_at`` says when).
    """

    __tablename__ = "finished_threads"
    thread_id: str = Field(primary_key=True, max_length=200)
    graph: str = Field(index=True, description="collect | rewrite | loop ...")
    result: dict = _json({})
    finished_at: datetime = Field(default_factory=utcnow, index=True)
    pruned_at: datetime | None = None
