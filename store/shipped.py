"""The data files that ship with promptloop and how `promptloop init` loads them."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import select

from promptloop.config import Settings, default_of
from promptloop.store.engine import session_scope
from promptloop.store.hashing import prompt_hash
from promptloop.store.importer import ImportReport, import_prompts, read_prompt_file
from promptloop.store.models import Prompt

VBENCH_TEST_EVERY = 4  # one VBench prompt in four (by prompt hash) is vbench-test
VBENCH_REWRITES = {"gpt4o": "all_dimension_gpt4o_longer.txt", "wan21_qwen25_3b": "all_dimension_wan21_qwen25_3b.txt",
                   "hunyuan": "all_dimension_hunyuan.txt"}


def data_dir() -> Path:
    return Path(str(resources.files("promptloop").joinpath("data")))


def shipped_prompts(split: str) -> list[str]:
    """The texts of prompts.csv's rows in ``split`` (train / eval), in file order, without a store."""
    rows = read_prompt_file(data_dir() / "prompts.csv", max_chars=default_of(Settings, "max_prompt_chars"))
    return [r.text for r in rows if r.split == split]


@dataclass(frozen=True)
class ShippedSet:
    file: str
    source: str
    split: str | None  # None: the file's own split column decides
    description: str


SHIPPED = (
    ShippedSet("prompts.csv", "shipped", None, "300 short user-style prompts, 12 categories, train/eval"),
    ShippedSet("redteam.csv", "redteam", "redteam", "harmful prompts by category and benign look-alikes"),
    ShippedSet("vbench/all_dimension.txt", "vbench", None, "the 946 VBench prompts (Apache-2.0), split by "
               "vbench_split into vbench-train (split train) and vbench-test (split test)"),
)


def vbench_prompts() -> list[str]:
    """The 946 VBench prompts of all_dimension.txt, in file order (the public rewrites align with them)."""
    return (data_dir() / "vbench" / "all_dimension.txt").read_text(encoding="utf-8").splitlines()


def vbench_split(text: str) -> str:
    """'test' or 'train' for a VBench prompt, from its normalised text's hash.

    Deterministic and independent of file order, and a prompt that appears
    twice in the file lands on one side only, so no test prompt is ever a
    training prompt under another line number. About a quarter is test.
    """
    return "test" if int(prompt_hash(text)[:8], 16) % VBENCH_TEST_EVERY == 0 else "train"


def import_shipped(engine: Engine, *, max_chars: int = default_of(Settings, "max_prompt_chars")) -> list[ImportReport]:
    reports = [import_prompts(engine, data_dir() / s.file, split=s.split, source=s.source, max_chars=max_chars,
                              split_of=vbench_split if s.source == "vbench" else None)
               for s in SHIPPED]
    resplit_vbench(engine)
    return reports


def resplit_vbench(engine: Engine) -> int:
    """Put stores initialised before the VBench split (every VBench prompt in 'test') on the split rule.

    Only rows that came from the VBench file and still sit in 'test' move; a
    prompt imported from elsewhere keeps the split its owner gave it.
    """
    moved = 0
    with session_scope(engine) as s:
        for row in s.exec(select(Prompt).where(Prompt.source == "vbench", Prompt.split == "test")):
            if vbench_split(row.text) == "train":
                row.split = "train"
                s.add(row)
                moved += 1
    return moved


def vbench_rewrites() -> dict[str, list[str]]:
    """The three public rewrites of the VBench prompts, aligned line by line with all_dimension.txt."""
    folder = data_dir() / "vbench"
    return {k: (folder / f).read_text(encoding="utf-8").splitlines() for k, f in VBENCH_REWRITES.items()}
