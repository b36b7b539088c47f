"""Rewriter model versions: naming, parents, registration and promotion.

A version is an adapter folder plus a row; rows are only ever added, and a
version's adapter folder is written once (temp folder, then rename), so an
earlier version can always be loaded exactly as it was evaluated.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.errors import PromptloopError
from promptloop.store.engine import session_scope
from promptloop.store.models import ModelVersion, Round, VersionStatus
from promptloop.store.repository import get_or_create_version


class UnknownVersion(PromptloopError, LookupError):
    pass


def ensure_version(engine: Engine, name: str | None, base_model: str) -> int:
    """The store id of a rewriter version; the base model is registered on first use."""
    with session_scope(engine) as s:
        if name in (None, "base"):
            row, _ = get_or_create_version(s, "base", base_model=base_model, algorithm="base",
                                                status=VersionStatus.champion)
            return row.id
        row = s.exec(select(ModelVersion).where(ModelVersion.name == name)).first()
        if row is None:
            raise PromptloopError(f"unknown model version '{name}'")
        return row.id


def ensure_base(engine: Engine, base_model: str) -> ModelVersion:
    ensure_version(engine, "base", base_model)
    return get_version(engine, "base")


def get_version(engine: Engine, name: str) -> ModelVersion:
    """By name, or 'champion' for the current champion (the base model until something is promoted)."""
    with Session(engine) as s:
        if name == "champion":
            row = champion(s)
        else:
            row = s.exec(select(ModelVersion).where(ModelVersion.name == name)).first()
            if row is None and name.isdigit():
                row = s.get(ModelVersion, int(name))
        if row is None:
            known = ", ".join(s.exec(select(ModelVersion.name)).all()) or "none yet"
            raise UnknownVersion(f"unknown model version '{name}' (known: {known})")
        return row


def anchor(engine: Engine, version: ModelVersion) -> ModelVersion | None:
    """The SFT version a DPO chain started from: ``version`` or its nearest SFT ancestor; None = the base model.

    RLHFlow's iterative DPO keeps this model as the reference across rounds,
    so a chain of DPO rounds stays anchored to what SFT taught instead of
    drifting with each new parent.
    """
    with Session(engine) as s:
        row: ModelVersion | None = version
        while row is not None:
            if row.algorithm == "sft" and row.adapter_path:
                return row
            row = s.get(ModelVersion, row.parent_id) if row.parent_id is not None else None
    return None


def champion(s: Session) -> ModelVersion | None:
    return s.exec(select(ModelVersion).where(ModelVersion.status == VersionStatus.champion)
                  .order_by(ModelVersion.id.desc())).first()


def next_name(engine: Engine, stem: str) -> str:
    with Session(engine) as s:
        taken = set(s.exec(select(ModelVersion.name).where(ModelVersion.name.startswith(stem))).all())
    if stem not in taken:
        return stem
    k = 2
    while f"{stem}-{k}" in taken:
        k += 1
    return f"{stem}-{k}"


def register(engine: Engine, *, name: str, base_model: str, adapter_path: str, parent_id: int | None,
             algorithm: str, round_index: int, metrics: dict, data_provenance: dict) -> ModelVersion:
    with session_scope(engine) as s:
        if s.exec(select(ModelVersion).where(ModelVersion.name == name)).first() is not None:
            raise PromptloopError(f"model version '{name}' exists already; versions are never overwritten")
        rnd = s.exec(select(Round).where(Round.index == round_index)).first()
        row = ModelVersion(name=name, base_model=base_model, adapter_path=adapter_path, parent_id=parent_id,
                           algorithm=algorithm, round_id=rnd.id if rnd else None, status=VersionStatus.candidate,
                           metrics=metrics, data_provenance=data_provenance)
        s.add(row)
        s.flush()
        s.refresh(row)
        s.expunge(row)
        return row


def set_status(engine: Engine, name: str, status: VersionStatus, *, note: dict | None = None) -> None:
    """Promotion demotes the old champion to archived in the same transaction: there is always one champion."""
    with session_scope(engine) as s:
        row = s.exec(select(ModelVersion).where(ModelVersion.name == name)).one()
        if status == VersionStatus.champion:
            for old in s.exec(select(ModelVersion).where(ModelVersion.status == VersionStatus.champion)):
                if old.id != row.id:
                    old.status = VersionStatus.archived
                    s.add(old)
        row.status = status
        if note:
            row.metrics = {**row.metrics, "decision": note}
        s.add(row)


def rewriter_version(engine: Engine, ref: str | None) -> ModelVersion | None:
    """The rewriter version ``ref`` names: None or 'base' -> None (the base model), 'champion' -> the promoted
    version (None while nothing is promoted), else a name or id. Video-side versions are refused."""
    if ref in (None, "base"):
        return None
    if ref == "champion":
        with Session(engine) as s:
            row = champion(s)
        if row is None:
            return None
    else:
        row = get_version(engine, ref)
    if row.algorithm in ("critic", "rwr"):
        raise PromptloopError(f"'{row.name}' is a {row.algorithm} version, not a rewriter version")
    return row


def artifact_folder(engine: Engine, ref: str, algorithm: str) -> str:
    """The folder of a video-side artifact named by its version (``train rwr`` / ``train critic``) or a path."""
    from pathlib import Path

    if Path(ref).is_dir():
        return ref
    row = get_version(engine, ref)
    if row.algorithm != algorithm:
        raise PromptloopError(f"'{ref}' is a {row.algorithm} version, not a {algorithm} version")
    return row.adapter_path


def trained_prompt_hashes(engine: Engine, version: ModelVersion) -> set[str]:
    """Prompt hashes of every row ``version`` and its ancestors trained on (their data provenance).

    What an evaluation checks its prompts against: a version is contaminated
    on a bench when any of the bench's prompts is in here.
    """
    from promptloop.store.models import PreferencePair, Prompt, SFTExample

    sft_ids: set[int] = set()
    pair_ids: set[int] = set()
    with Session(engine) as s:
        row: ModelVersion | None = version
        while row is not None:
            prov = row.data_provenance or {}
            sft_ids.update(prov.get("example_ids", []))
            pair_ids.update(prov.get("pair_ids", []))
            row = s.get(ModelVersion, row.parent_id) if row.parent_id is not None else None
        prompt_ids: set[int] = set()
        if sft_ids:
            prompt_ids.update(s.exec(select(SFTExample.prompt_id).where(SFTExample.id.in_(sft_ids))).all())
        if pair_ids:
            prompt_ids.update(s.exec(select(PreferencePair.prompt_id).where(PreferencePair.id.in_(pair_ids))).all())
        if not prompt_ids:
            return set()
        return set(s.exec(select(Prompt.content_hash).where(Prompt.id.in_(prompt_ids))).all())
