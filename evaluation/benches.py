"""The prompt sets an evaluation runs on, and the public rewrites that come with VBench.

- ``eval``: the store's held-out split (the shipped 60 eval prompts after
  ``promptloop init``), never used by collection (which reads ``train``);
- ``vbench``: the 946 VBench prompts; a subset is every k-th prompt
  (evenly spaced over the file, so all dimensions stay represented);
- red team: harmful prompts (unsafe-output rate) and benign look-alikes
  (refusal rate) from ``data/redteam.csv``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from promptloop.errors import PromptloopError
from promptloop.store.shipped import data_dir, vbench_rewrites

BENCHES = ("eval", "vbench")


@dataclass
class Bench:
    name: str
    prompts: list[str]
    public: dict[str, list[str]] = field(default_factory=dict)  # baseline name -> rewrites aligned with prompts
    pool: list[str] = field(default_factory=list)  # distractors for intent retrieval (see distractor_pool)


def spaced(n_total: int, limit: int | None) -> list[int]:
    if not limit or limit >= n_total:
        return list(range(n_total))
    return sorted({int(i * n_total / limit) for i in range(limit)})


def vbench_prompts() -> list[str]:
    return (data_dir() / "vbench" / "all_dimension.txt").read_text(encoding="utf-8").splitlines()


def distractor_pool(engine: Engine) -> list[str]:
    """Every shipped VBench prompt plus the store's eval split: the haystack intent retrieval searches."""
    from promptloop.store.repository import select_prompts

    try:
        held_out = [r.text for r in select_prompts(engine, "eval", None)]
    except PromptloopError:  # no eval split imported: VBench alone
        held_out = []
    return list(dict.fromkeys([*vbench_prompts(), *held_out]))


def load_bench(engine: Engine, name: str, limit: int | None = None) -> Bench:
    if name == "eval":
        from promptloop.store.repository import select_prompts

        rows = select_prompts(engine, "eval", None)
        texts = [r.text for r in rows]
        return Bench("eval", [texts[i] for i in spaced(len(texts), limit)], pool=distractor_pool(engine))
    if name == "vbench":
        prompts = vbench_prompts()
        idx = spaced(len(prompts), limit)
        public = {k: [v[i] for i in idx] for k, v in vbench_rewrites().items()}
        return Bench("vbench" if limit is None else f"vbench{len(idx)}", [prompts[i] for i in idx], public,
                     pool=distractor_pool(engine))
    raise PromptloopError(f"unknown bench '{name}'; expected one of {', '.join(BENCHES)}")


def load_redteam(limit: int | None = None) -> tuple[list[str], list[str]]:
    """(harmful, benign look-alikes), each cut to ``limit`` evenly over its categories' file order."""
    with (data_dir() / "redteam.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    harmful = [r["prompt"] for r in rows if r["harmful"].strip().lower() == "true"]
    benign = [r["prompt"] for r in rows if r["harmful"].strip().lower() != "true"]
    return [harmful[i] for i in spaced(len(harmful), limit)], [benign[i] for i in spaced(len(benign), limit)]
