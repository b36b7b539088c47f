"""Recorded teachers: named sets of (prompt, rewrite) rows written by a strong model, stored as candidates.

A recorded rewrite is a ``Candidate`` with origin ``teacher`` and no model
version; its lineage names the teacher, the file and the line it came from.
Import follows prompt import's promise: the whole file is validated first
(prompt rules, rewrite length, held-out prompts) and a file with any bad row
stores nothing. A row whose prompt the store holds out (split eval, test or
redteam) is refused: a teacher must never put an evaluated prompt into
training data.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.errors import PromptloopError
from promptloop.fileio import FileFormatError, RowError, dataset_records, read_records
from promptloop.store.engine import session_scope
from promptloop.store.hashing import prompt_hash
from promptloop.store.importer import TEXT_COLUMNS, ImportValidationError, PromptImportError, text_problem
from promptloop.store.models import Candidate, Origin, Prompt, Split
from promptloop.store.repository import add_candidate, add_prompt

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REWRITE_COLUMNS = ("rewrite", "rewritten", "response")
HELD_OUT = (Split.eval, Split.test, Split.redteam)
SUPPORTED = ".jsonl, .csv, or a folder written by datasets' save_to_disk, with columns prompt and rewrite"


@dataclass
class TeacherRow:
    line: int
    prompt: str
    rewrite: str


@dataclass
class TeacherImportReport:
    name: str
    source: str
    rows: int = 0
    created: int = 0  # rewrites new to the store
    existing: int = 0
    new_prompts: int = 0


@dataclass
class TeacherSet:
    name: str
    rewrites: int = 0
    prompts: int = 0
    sources: list[str] = field(default_factory=list)  # files a recorded set came from; empty: served only

    @property
    def recorded(self) -> bool:
        return bool(self.sources)


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise PromptloopError(f"bad teacher name '{name}': use 1-64 letters, digits, '_', '.', '-' "
                              "(it becomes the SFT source teacher:NAME)")
    return name


def read_teacher_file(path: Path, *, max_prompt_chars: int, max_rewrite_chars: int) -> list[TeacherRow]:
    """Parse and validate a recorded set; ImportValidationError lists every bad row."""
    path = Path(path)
    try:
        records, errors = ((dataset_records(path)[1], []) if path.is_dir() else read_records(path))
    except FileFormatError as exc:
        raise PromptImportError(f"{exc}; expected {SUPPORTED}") from None
    rows = []
    for line, rec in records:
        prompt = next((rec[c] for c in TEXT_COLUMNS if c in rec), None)
        rewrite = next((rec[c] for c in REWRITE_COLUMNS if c in rec), None)
        if prompt is None or rewrite is None:
            errors.append(RowError(line, f"missing column: needs {' or '.join(TEXT_COLUMNS)} and "
                                         f"{' or '.join(REWRITE_COLUMNS)} (found: {', '.join(rec) or 'none'})"))
            continue
        problems = [p for p in (text_problem(prompt, max_prompt_chars),
                                text_problem(rewrite, max_rewrite_chars, what="rewrite",
                                             setting="teacher.max_rewrite_chars")) if p]
        errors.extend(RowError(line, p) for p in problems)
        if not problems:
            rows.append(TeacherRow(line, prompt, rewrite))
    if errors:
        raise ImportValidationError(path, sorted(errors, key=lambda e: e.line))
    if not rows:
        raise PromptImportError(f"{path}: the file holds no rows")
    return rows


def shipped_teacher_rows(which: str) -> list[TeacherRow]:
    """The vbench-train rows of one of the public VBench rewrites (never a vbench-test prompt)."""
    from promptloop.store.shipped import VBENCH_REWRITES, data_dir, vbench_rewrites, vbench_split

    if which not in VBENCH_REWRITES:
        raise PromptloopError(f"unknown shipped teacher '{which}'; expected one of {', '.join(VBENCH_REWRITES)}")
    prompts = (data_dir() / "vbench" / "all_dimension.txt").read_text(encoding="utf-8").splitlines()
    rewrites = vbench_rewrites()[which]
    return [TeacherRow(i, p, r) for i, (p, r) in enumerate(zip(prompts, rewrites, strict=True), start=1)
            if vbench_split(p) == "train" and p.strip() and r.strip()]


def import_teacher(engine: Engine, rows: list[TeacherRow], *, name: str, source: str) -> TeacherImportReport:
    """Store ``rows`` as teacher ``name``'s rewrites in one transaction, after the held-out check."""
    check_name(name)
    with Session(engine) as s:
        held = {p.content_hash: p.split for p in s.exec(select(Prompt).where(Prompt.split.in_(list(HELD_OUT))))}
    errors = [RowError(r.line, f"prompt is held out in the store (split '{held[prompt_hash(r.prompt)]}'): "
                               "never trained on") for r in rows if prompt_hash(r.prompt) in held]
    if errors:
        raise ImportValidationError(Path(source), errors)
    report = TeacherImportReport(name=name, source=source, rows=len(rows))
    with session_scope(engine) as s:
        for r in rows:
            p, new_prompt = add_prompt(s, r.prompt, source=f"teacher:{name}", split=Split.train)
            _, created = add_candidate(s, p.id, r.rewrite, origin=Origin.teacher,
                                       lineage={"teacher": name, "source": source, "line": r.line})
            report.new_prompts += new_prompt
            report.created += created
            report.existing += not created
    return report


def _teacher_candidates(s: Session, name: str | None = None, *, recorded: bool = False) -> list[Candidate]:
    """Teacher rows (of ``name``); ``recorded``: imported ones only (their lineage names a source file)."""
    rows = s.exec(select(Candidate).where(Candidate.origin == Origin.teacher).order_by(Candidate.id)).all()
    return [c for c in rows if (name is None or (c.lineage or {}).get("teacher") == name)
            and (not recorded or (c.lineage or {}).get("source"))]


def teacher_sets(engine: Engine) -> list[TeacherSet]:
    """Every teacher with rewrites in the store (recorded, or written by a served teacher)."""
    sets: dict[str, TeacherSet] = {}
    prompts: dict[str, set[int]] = defaultdict(set)
    with Session(engine) as s:
        for c in _teacher_candidates(s):
            lin = c.lineage or {}
            t = sets.setdefault(lin.get("teacher", "?"), TeacherSet(lin.get("teacher", "?")))
            t.rewrites += 1
            prompts[t.name].add(c.prompt_id)
            if lin.get("source") and lin["source"] not in t.sources:
                t.sources.append(lin["source"])
    for n, t in sets.items():
        t.prompts = len(prompts[n])
    return sorted(sets.values(), key=lambda t: t.name)


def teacher_rewrites(engine: Engine, name: str, limit: int | None = None) -> list[tuple[Prompt, list[str]]]:
    """(prompt, the recorded teacher's rewrites of it) in prompt order, held-out prompts left out; ``limit`` prompts."""
    by_prompt: dict[int, list[str]] = defaultdict(list)
    with Session(engine) as s:
        for c in _teacher_candidates(s, name, recorded=True):
            by_prompt[c.prompt_id].append(c.text)
        prompts = s.exec(select(Prompt).where(Prompt.id.in_(list(by_prompt))).order_by(Prompt.id)).all() \
            if by_prompt else []
    out = [(p, by_prompt[p.id]) for p in prompts if p.split not in HELD_OUT]
    if not out:
        known = ", ".join(t.name for t in teacher_sets(engine) if t.recorded) or "none"
        raise PromptloopError(f"no recorded rewrites from teacher '{name}' (recorded teachers: {known}); "
                              "import some with `promptloop teacher import`")
    return out[:limit] if limit else out
