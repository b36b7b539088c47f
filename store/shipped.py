"""The data files that ship with promptloop and how `promptloop init` loads them."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqlalchemy.engine import Engine

from promptloop.config import Settings, default_of
from promptloop.store.importer import ImportReport, import_prompts


def data_dir() -> Path:
    return Path(str(resources.files("promptloop").joinpath("data")))


@dataclass(frozen=True)
class ShippedSet:
    file: str
    source: str
    split: str | None  # None: the file's own split column decides
    description: str


SHIPPED = (
    ShippedSet("prompts.csv", "shipped", None, "300 short user-style prompts, 12 categories, train/eval"),
    ShippedSet("redteam.csv", "redteam", "redteam", "harmful prompts by category and benign look-alikes"),
    ShippedSet("vbench/all_dimension.txt", "vbench", "test", "the 946 VBench prompts (Apache-2.0)"),
)


def import_shipped(engine: Engine, *, max_chars: int = default_of(Settings, "max_prompt_chars")) -> list[ImportReport]:
    return [import_prompts(engine, data_dir() / s.file, split=s.split, source=s.source, max_chars=max_chars)
            for s in SHIPPED]


def vbench_rewrites() -> dict[str, list[str]]:
    """The three public rewrites of the VBench prompts, aligned line by line with all_dimension.txt."""
    folder = data_dir() / "vbench"
    names = {"gpt4o": "all_dimension_gpt4o_longer.txt", "wan21_qwen25_3b": "all_dimension_wan21_qwen25_3b.txt",
             "hunyuan": "all_dimension_hunyuan.txt"}
    return {k: (folder / f).read_text(encoding="utf-8").splitlines() for k, f in names.items()}
