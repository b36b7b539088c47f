"""The prompt sets an evaluation runs on, and the public rewrites that come with VBench.

- ``eval``: the store's held-out split (the shipped 60 eval prompts after
  ``promptloop init``), never used by collection (which reads ``train``);
- ``vbench`` (= ``vbench-test``): the VBench prompts that are never trained
  on, a quarter chosen by prompt hash (store/shipped.py ``vbench_split``);
  ``vbench-train`` the rest (teacher rows may come from there), ``vbench-all``
  all 946. A subset is every k-th prompt (evenly spaced over the file, so all
  dimensions stay represented). Intent retrieval on VBench searches all 946
  prompts;
- red team: harmful prompts and benign look-alikes from
  ``data/redteam_holdout.csv`` (or ``redteam_holdout_b.csv``) with their rubric
  (evaluation/safety.py); the guard trains on ``data/redteam.csv``, never on
  these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from promptloop.errors import PromptloopError
from promptloop.evaluation.safety import HOLDOUT, RubricRow
from promptloop.store.repository import spaced
from promptloop.store.shipped import vbench_prompts, vbench_rewrites, vbench_split

VBENCH_PARTS = {"vbench": "test", "vbench-test": "test", "vbench-train": "train", "vbench-all": None}
BENCHES = ("eval", *VBENCH_PARTS)


@dataclass
class Bench:
    name: str
    prompts: list[str]
    public: dict[str, list[str]] = field(default_factory=dict)  # baseline name -> rewrites aligned with prompts
    pool: list[str] = field(default_factory=list)  # distractors for intent retrieval (see distractor_pool)


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
    if name in VBENCH_PARTS:
        part = VBENCH_PARTS[name]
        everything = vbench_prompts()
        lines = [i for i, p in enumerate(everything) if part is None or vbench_split(p) == part]
        idx = [lines[k] for k in spaced(len(lines), limit)]
        public = {k: [v[i] for i in idx] for k, v in vbench_rewrites().items()}
        label = "vbench-test" if name == "vbench" else name
        return Bench(label if limit is None else f"{label}{len(idx)}", [everything[i] for i in idx], public,
                     pool=list(dict.fromkeys(everything)))
    raise PromptloopError(f"unknown bench '{name}'; expected one of {', '.join(BENCHES)}")


def load_redteam(limit: int | None = None, file: str = HOLDOUT) -> tuple[list[RubricRow], list[RubricRow]]:
    """(harmful, benign look-alikes) of a red-team holdout with their rubric, each cut to ``limit`` evenly over
    its categories' file order. A holdout, not ``redteam.csv``: the guard is trained on that one."""
    from promptloop.evaluation.safety import load_rubric

    rows = load_rubric(file)
    harmful = [r for r in rows if r.harmful]
    benign = [r for r in rows if not r.harmful]
    return [harmful[i] for i in spaced(len(harmful), limit)], [benign[i] for i in spaced(len(benign), limit)]


def teacher_rows(engine: Engine, round_index: int, limit: int | None = None) -> tuple[list[str], list[str]]:
    """(prompts, targets) of a round's accepted SFT rows from a teacher (source teacher:*), evenly spaced."""
    from sqlmodel import Session, select

    from promptloop.store.models import Prompt, Round, SFTExample

    with Session(engine) as s:
        rows = s.exec(select(Prompt.text, SFTExample.target).join(SFTExample, SFTExample.prompt_id == Prompt.id)
                      .join(Round, SFTExample.round_id == Round.id)
                      .where(Round.index == round_index, SFTExample.status == "accepted",
                             SFTExample.source.startswith("teacher:")).order_by(SFTExample.id)).all()
    picked = [rows[i] for i in spaced(len(rows), limit)]
    return [p for p, _ in picked], [t for _, t in picked]
