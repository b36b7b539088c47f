"""Import user prompts from .txt, .jsonl, .csv or a `datasets` folder.

The whole file is read and validated before anything is written: a file
with any bad row is rejected with a per-row report, and the database is left
exactly as it was. A valid file is written in one transaction.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from promptloop.config import Settings, default_of
from promptloop.fileio import (
    FileFormatError,
    RowError,
    csv_records,
    dataset_records,
    decode_text,
    jsonl_records,
)
from promptloop.store.engine import session_scope
from promptloop.store.models import Split
from promptloop.store.repository import add_prompt

TEXT_COLUMNS = ("prompt", "text")
SUPPORTED = ".txt, .jsonl, .csv, or a folder written by datasets' save_to_disk"
MAX_REPORTED_ERRORS = 50


class PromptImportError(FileFormatError):
    """A file that cannot be imported; nothing from it was stored."""


class ImportValidationError(PromptImportError):
    def __init__(self, path: Path, errors: list[RowError]):
        self.path = path
        self.errors = errors
        shown = "\n".join(f"  {e}" for e in errors[:MAX_REPORTED_ERRORS])
        more = f"\n  ... and {len(errors) - MAX_REPORTED_ERRORS} more" if len(errors) > MAX_REPORTED_ERRORS else ""
        super().__init__(f"{path}: {len(errors)} invalid row(s); nothing was imported\n{shown}{more}")


@dataclass
class PromptRow:
    line: int
    text: str
    split: str | None = None
    category: str | None = None
    source: str | None = None
    harmful: bool | None = None


@dataclass
class ImportReport:
    path: str
    rows: int = 0
    created: int = 0
    existing: int = 0
    by_split: dict[str, int] = field(default_factory=dict)


def read_prompt_file(path: Path, *, max_chars: int) -> list[PromptRow]:
    """Parse and validate; raises PromptImportError for file-level problems, ImportValidationError for rows."""
    path = Path(path)
    if not path.exists():
        raise PromptImportError(f"{path}: no such file or folder")
    if path.is_dir():
        rows, errors = _read_datasets_folder(path)
    else:
        suffix = path.suffix.lower()
        if suffix not in (".txt", ".jsonl", ".csv"):
            raise PromptImportError(f"{path}: unsupported file type '{suffix or path.name}'; expected {SUPPORTED}")
        text, errors = decode_text(path)
        if errors:
            raise ImportValidationError(path, errors)
        reader = {".txt": _read_txt, ".jsonl": _read_jsonl, ".csv": _read_csv}[suffix]
        rows, errors = reader(path, text)
    errors += _validate(rows, max_chars)
    if errors:
        raise ImportValidationError(path, sorted(errors, key=lambda e: e.line))
    if not rows:
        raise PromptImportError(f"{path}: the file holds no prompts")
    return rows


def import_prompts(engine: Engine, path: Path, *, split: str | None = None, source: str | None = None,
                   category: str | None = None, max_chars: int = default_of(Settings, "max_prompt_chars"),
                   split_of: Callable[[str], str] | None = None) -> ImportReport:
    """Validate the whole file, then store it in one transaction (idempotent per prompt).

    ``split_of`` decides each row's split from its text (the shipped VBench rule) where ``split`` is None.
    """
    if split is not None and split not in Split.__members__:
        raise PromptImportError(f"unknown split '{split}'; expected one of {', '.join(Split.__members__)}")
    rows = read_prompt_file(path, max_chars=max_chars)
    report = ImportReport(path=str(path), rows=len(rows))
    default_source = source or Path(path).stem
    with session_scope(engine) as session:
        for row in rows:
            row_split = split or (split_of(row.text) if split_of else None) or row.split or Split.train
            _, created = add_prompt(session, row.text, source=row.source or default_source, split=row_split,
                                    category=row.category or category, harmful=row.harmful)
            report.created += created
            report.existing += not created
            report.by_split[row_split] = report.by_split.get(row_split, 0) + 1
    return report


def _read_txt(path: Path, text: str) -> tuple[list[PromptRow], list[RowError]]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines are just file endings
        lines.pop()
    return [PromptRow(i, line) for i, line in enumerate(lines, start=1)], []


def _read_jsonl(path: Path, text: str) -> tuple[list[PromptRow], list[RowError]]:
    records, errors = jsonl_records(text)
    rows = []
    for i, obj in records:
        row = _row_from_mapping(i, obj)
        if row is None:
            errors.append(RowError(i, f"missing key: one of {' / '.join(TEXT_COLUMNS)}"))
        else:
            rows.append(row)
    return rows, sorted(errors, key=lambda e: e.line)


def _read_csv(path: Path, text: str) -> tuple[list[PromptRow], list[RowError]]:
    columns, records = csv_records(text)
    if not any(c in TEXT_COLUMNS for c in columns):
        raise PromptImportError(f"{path}: missing column: the CSV header needs a 'prompt' or 'text' column "
                           f"(found: {', '.join(columns) or 'no header'})")
    return [_row_from_mapping(line, mapping) or PromptRow(line, "") for line, mapping in records], []


def _read_datasets_folder(path: Path) -> tuple[list[PromptRow], list[RowError]]:
    try:
        columns, records = dataset_records(path)
    except FileFormatError as exc:
        raise PromptImportError(f"{exc}; expected {SUPPORTED}") from None
    if not any(c in TEXT_COLUMNS for c in columns):
        raise PromptImportError(f"{path}: missing column: the dataset needs a 'prompt' or 'text' column "
                           f"(found: {', '.join(columns)})")
    return [_row_from_mapping(i, rec) or PromptRow(i, "") for i, rec in records], []


def _row_from_mapping(line: int, obj: dict) -> PromptRow | None:
    text = next((obj[c] for c in TEXT_COLUMNS if c in obj), None)
    if text is None:
        return None
    harmful = obj.get("harmful")
    if isinstance(harmful, str):
        harmful = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
            harmful.strip().lower())
    return PromptRow(line, text if isinstance(text, str) else str(text), split=_opt(obj.get("split")),
                     category=_opt(obj.get("category")), source=_opt(obj.get("source")), harmful=harmful)


def _opt(v: object) -> str | None:
    return str(v).strip() or None if v is not None else None


def text_problem(text: object, max_chars: int, *, what: str = "prompt",
                 setting: str = "Settings.max_prompt_chars") -> str | None:
    """Why ``text`` cannot be stored as a prompt (or a rewrite), or None: the one rule every importer applies."""
    if not isinstance(text, str) or not text.strip():
        return f"empty {what}"
    if not any(unicodedata.category(ch)[0] not in "CZ" for ch in text):
        return f"{what} has no visible characters (only control or format characters)"
    if len(text) > max_chars:
        return f"{what} is {len(text)} characters, over the limit of {max_chars} ({setting})"
    return None


def _validate(rows: list[PromptRow], max_chars: int) -> list[RowError]:
    errors = []
    for row in rows:
        problem = text_problem(row.text, max_chars)
        if problem:
            errors.append(RowError(row.line, problem))
        if row.split is not None and row.split not in Split.__members__:
            errors.append(RowError(row.line, f"unknown split '{row.split}'"))
    return errors
