import json
from pathlib import Path

import pytest
from helpers import table_snapshot
from sqlmodel import Session, select

from promptloop.store.importer import ImportValidationError, PromptImportError, import_prompts
from promptloop.store.models import Prompt


def _texts(engine) -> list[tuple[str, str, str | None]]:
    with Session(engine) as s:
        return [(p.text, p.split, p.category) for p in s.exec(select(Prompt).order_by(Prompt.id))]


def test_txt_jsonl_csv_import(engine, tmp_path: Path):
    txt = tmp_path / "a.txt"
    txt.write_text("a cat playing piano\na dog on a beach\n\n", encoding="utf-8")
    rep = import_prompts(engine, txt, split="eval")
    assert (rep.rows, rep.created, rep.existing) == (2, 2, 0)
    jl = tmp_path / "b.jsonl"
    jl.write_text('{"prompt": "a red car", "category": "vehicles"}\n{"text": "a dog on a beach", "split": "train"}\n')
    rep = import_prompts(engine, jl)
    assert (rep.created, rep.existing) == (1, 1)  # the dog is already stored
    csv = tmp_path / "c.csv"
    csv.write_text("Text,category,split\nsnow on a village,nature,test\n\"a cat, a hat\",animals,\n", encoding="utf-8")
    rep = import_prompts(engine, csv)
    assert rep.created == 2 and rep.by_split == {"test": 1, "train": 1}
    assert _texts(engine) == [
        ("a cat playing piano", "eval", None), ("a dog on a beach", "eval", None), ("a red car", "train", "vehicles"),
        ("snow on a village", "test", "nature"), ("a cat, a hat", "train", "animals"),
    ]
    again = import_prompts(engine, csv)
    assert (again.created, again.existing) == (0, 2)


def test_datasets_folder_import(engine, tmp_path: Path):
    from datasets import Dataset

    Dataset.from_dict({"prompt": ["a kite in the wind", "a whale"], "category": ["nature", "animals"]}).save_to_disk(
        str(tmp_path / "ds"))
    rep = import_prompts(engine, tmp_path / "ds", split="train", source="hf")
    assert rep.created == 2
    assert ("a whale", "train", "animals") in _texts(engine)


BAD_CASES = {
    "empty line": ("bad.txt", b"a cat\n\na dog\n", "line 2: empty prompt"),
    "missing column": ("bad.csv", b"caption,category\na cat,animals\n", "missing column"),
    "invalid utf-8": ("bad.txt", b"a cat\na d\xffog\n", "line 2: invalid UTF-8"),
    "over-long": ("bad.txt", b"a cat\n" + b"x" * 50 + b"\n", "line 2: prompt is 50 characters, over the limit of 40"),
    "wrong file type": ("bad.pdf", b"%PDF-1.4", "unsupported file type '.pdf'"),
    "bad json": ("bad.jsonl", b'{"prompt": "ok"}\n{"prompt": \n', "line 2: not valid JSON"),
    "json key missing": ("bad.jsonl", b'{"prompt": "ok"}\n{"caption": "x"}\n', "line 2: missing key"),
    "unknown split": ("bad.jsonl", b'{"prompt": "ok", "split": "holdout"}\n', "unknown split 'holdout'"),
    "empty csv cell": ("bad.csv", b"prompt\nfine\n\"\"\n", "line 3: empty prompt"),
    "no prompts": ("bad.txt", b"\n\n", "holds no prompts"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_stores_nothing(engine, tmp_path: Path, case: str):
    import_prompts(engine, _write(tmp_path / "ok.txt", b"already here\n"))
    before = table_snapshot(engine)
    name, payload, message = BAD_CASES[case]
    with pytest.raises(PromptImportError) as err:
        import_prompts(engine, _write(tmp_path / name, payload), max_chars=40)
    assert message in str(err.value)
    assert table_snapshot(engine) == before


def test_all_row_errors_are_reported_together(engine, tmp_path: Path):
    f = _write(tmp_path / "many.jsonl", b'{"prompt": "ok"}\n\n{"prompt": ""}\n{"x": 1}\n' + b'{"prompt": "fine"}\n')
    with pytest.raises(ImportValidationError) as err:
        import_prompts(engine, f)
    assert [e.line for e in err.value.errors] == [2, 3, 4]
    assert "nothing was imported" in str(err.value)
    assert _texts(engine) == []


def test_unknown_split_flag_and_missing_file(engine, tmp_path: Path):
    with pytest.raises(PromptImportError, match="unknown split 'dev'"):
        import_prompts(engine, _write(tmp_path / "a.txt", b"x\n"), split="dev")
    with pytest.raises(PromptImportError, match="no such file"):
        import_prompts(engine, tmp_path / "nope.txt")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(PromptImportError, match="save_to_disk"):
        import_prompts(engine, tmp_path / "plain_dir")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_jsonl_unicode_round_trip(engine, tmp_path: Path):
    f = tmp_path / "u.jsonl"
    f.write_text(json.dumps({"prompt": "夕暮れの海辺を歩く二人"}, ensure_ascii=False) + "\n", encoding="utf-8")
    import_prompts(engine, f)
    assert _texts(engine)[0][0] == "夕暮れの海辺を歩く二人"
