"""File formats in one place: JSONL / CSV records with per-line errors, atomic and resumable JSONL output.

Import (prompts, ratings), export (datasets, ratings) and the commands that
write results line by line all read and write through here, so a format
rule (UTF-8 with BOM, blank lines, whole-line flushes) is decided once.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from promptloop.errors import PromptloopError


class FileFormatError(PromptloopError, ValueError):
    """A file that cannot be read as the format it claims; nothing from it was stored."""


@dataclass
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def decode_text(path: Path) -> tuple[str, list[RowError]]:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return "", [RowError(line, f"invalid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                                   "save the file as UTF-8")]


def jsonl_records(text: str, *, blank_lines_ok: bool = False) -> tuple[list[tuple[int, dict]], list[RowError]]:
    """(line, object) for each JSON-object line, and a RowError for each line that is not one."""
    records, errors = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if not blank_lines_ok:
                errors.append(RowError(i, "empty line"))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(RowError(i, f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(obj, dict):
            errors.append(RowError(i, "expected a JSON object"))
            continue
        records.append((i, obj))
    return records, errors


def csv_records(text: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """(lower-cased header, [(line, row with lower-cased keys)]) of a CSV file."""
    reader = csv.DictReader(io.StringIO(text))
    try:
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        return columns, [(reader.line_num, {(k or "").strip().lower(): v for k, v in rec.items()}) for rec in reader]
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit(), a NUL byte
        raise FileFormatError(f"not a readable CSV file (line {reader.line_num}: {exc})") from None


def dataset_records(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(lower-cased columns, [(row number, row with lower-cased keys)]) of a folder written by ``save_to_disk``.

    A DatasetDict gives its 'train' split (or its first).
    """
    if not ((path / "dataset_info.json").exists() or (path / "state.json").exists()
            or (path / "dataset_dict.json").exists()):
        raise FileFormatError(f"{path}: a folder must be written by datasets' save_to_disk")
    try:
        from datasets import Dataset, DatasetDict, load_from_disk
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise FileFormatError("reading a datasets folder needs the 'datasets' package: "
                              "pip install 'promptloop[train]'") from exc
    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    assert isinstance(ds, Dataset)
    return ([c.lower() for c in ds.column_names],
            [(i, {k.lower(): v for k, v in rec.items()}) for i, rec in enumerate(ds, start=1)])


def read_records(path: Path) -> tuple[list[tuple[int, dict]], list[RowError]]:
    """(line, mapping) per record of a .jsonl or .csv file, and the rows that are not records at all."""
    if not path.is_file():
        raise FileFormatError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise FileFormatError(f"{path}: unsupported format '{suffix}'; expected .jsonl or .csv")
    text, errors = decode_text(path)
    if errors:
        return [], errors
    if suffix == ".csv":
        return csv_records(text)[1], []
    return jsonl_records(text, blank_lines_ok=True)


def write_jsonl(path: Path, rows: Iterable[dict], *, keep_lines: int = 0) -> None:
    """Atomically (temp file, then rename) write ``rows``, after the first ``keep_lines`` lines already there."""
    old = path.read_text(encoding="utf-8").splitlines()[:keep_lines] if keep_lines and path.exists() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in old))
        append_jsonl(fh, rows)
    os.replace(tmp, path)


def append_jsonl(fh: IO[str], rows: Iterable[dict]) -> None:
    """Whole lines, flushed to disk: a crash can cut at most the last line, which a resume discards."""
    fh.write("".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))
    fh.flush()
    os.fsync(fh.fileno())


def resume_point(path: Path, keys: list[str], *, field: str = "prompt") -> int:
    """How many lines of ``path`` already hold results for ``keys``, in order (a crashed run continues there)."""
    if not path.exists():
        return 0
    done = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if done >= len(keys) or row.get(field) != keys[done]:
            raise FileFormatError(f"{path} holds results for other inputs; choose another output or delete it")
        done += 1
    return done
