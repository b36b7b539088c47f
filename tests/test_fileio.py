"""File formats: resumable JSONL output and record readers (fileio.py)."""

from __future__ import annotations

import pytest

from promptloop.errors import PromptloopError
from promptloop.fileio import FileFormatError, append_jsonl, read_records, resume_point, write_jsonl


def test_resume_point_discards_a_cut_line(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c", "final_pr')  # killed mid-write
    assert resume_point(out, ["a", "b", "c", "d"]) == 2
    write_jsonl(out, [], keep_lines=2)
    assert out.read_text() == '{"prompt": "a"}\n{"prompt": "b"}\n'
    with out.open("a", encoding="utf-8") as fh:
        append_jsonl(fh, [{"prompt": "c"}])
    assert resume_point(out, ["a", "b", "c", "d"]) == 3
    with pytest.raises(PromptloopError, match="other inputs"):
        resume_point(out, ["x", "b"])


def test_write_jsonl_is_atomic_and_leaves_no_temp_file(tmp_path):
    out = tmp_path / "sub" / "rows.jsonl"
    write_jsonl(out, [{"a": 1}, {"b": "é"}])
    assert out.read_text(encoding="utf-8") == '{"a": 1}\n{"b": "é"}\n'
    assert sorted(p.name for p in out.parent.iterdir()) == ["rows.jsonl"]


def test_read_records_reports_bad_lines_and_formats(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text('{"a": 1}\n\n[1]\nnot json\n')
    records, errors = read_records(f)
    assert records == [(1, {"a": 1})]
    assert [str(e) for e in errors] == ["line 3: expected a JSON object", "line 4: not valid JSON (Expecting value)"]
    c = tmp_path / "r.csv"
    c.write_text("Video_ID,score\n1,2\n")
    assert read_records(c) == ([(2, {"video_id": "1", "score": "2"})], [])
    with pytest.raises(FileFormatError, match="unsupported format '.txt'"):
        read_records(tmp_path / "r.txt") if (tmp_path / "r.txt").write_text("x") else None
    with pytest.raises(FileFormatError, match="no such file"):
        read_records(tmp_path / "missing.csv")
