"""Export training data in TRL's conversational formats: a jsonl file, or a Hub-layout dataset folder (parquet
plus a dataset card) that ``load_dataset``, ``trl sft`` / ``trl dpo`` and ``promptloop push`` take as it is.

SFT rows are ``{"messages": [...]}``; DPO rows are ``{"prompt": [...],
"chosen": [assistant], "rejected": [assistant]}``. The prompt side is built
by the same function the rewriter uses at inference (passed in as
``build_messages``), so what the model is trained on is what it later sees.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from promptloop.errors import PromptloopError
from promptloop.fileio import write_jsonl
from promptloop.store.models import Candidate, PreferencePair, Prompt, SFTExample

Messages = list[dict[str, str]]
BuildMessages = Callable[[str], Messages]
Format = Literal["jsonl", "hf"]
HF_DATA_FILE = "data/train-00000-of-00001.parquet"


class NothingToExport(PromptloopError, ValueError):
    """The store holds no rows of the requested kind."""


def sft_rows(session: Session, build_messages: BuildMessages, *, round_id: int | None = None) -> Iterator[dict]:
    q = (select(SFTExample, Prompt).join(Prompt, Prompt.id == SFTExample.prompt_id)
         .where(SFTExample.status == "accepted").order_by(SFTExample.id))
    if round_id is not None:
        q = q.where(SFTExample.round_id == round_id)
    for ex, prompt in session.exec(q):
        yield {"messages": [*build_messages(prompt.text), {"role": "assistant", "content": ex.target}],
               "prompt_id": prompt.id, "example_id": ex.id}


def dpo_rows(session: Session, build_messages: BuildMessages, *, round_id: int | None = None) -> Iterator[dict]:
    chosen, rejected = aliased(Candidate), aliased(Candidate)
    q = (select(PreferencePair, Prompt, chosen, rejected)
         .join(Prompt, Prompt.id == PreferencePair.prompt_id)
         .join(chosen, chosen.id == PreferencePair.chosen_id)
         .join(rejected, rejected.id == PreferencePair.rejected_id)
         .order_by(PreferencePair.id))
    if round_id is not None:
        q = q.where(PreferencePair.round_id == round_id)
    for pair, prompt, c, r in session.exec(q):
        yield {"prompt": build_messages(prompt.text),
               "chosen": [{"role": "assistant", "content": c.text}],
               "rejected": [{"role": "assistant", "content": r.text}],
               "margin": pair.margin, "pair_id": pair.id, "rule": pair.rule}


def export(engine: Engine, kind: Literal["sft", "dpo"], out: Path, build_messages: BuildMessages, *,
           fmt: Format = "jsonl", round_id: int | None = None) -> int:
    """Write the dataset to ``out`` atomically (temp then rename); returns the number of rows."""
    if fmt not in ("jsonl", "hf"):
        raise PromptloopError(f"unknown format '{fmt}'; expected jsonl or hf")
    out = Path(out)
    if out.exists() and out.is_dir() != (fmt == "hf"):
        raise PromptloopError(f"{out} is a {'folder' if out.is_dir() else 'file'}; format {fmt} writes a "
                              f"{'folder' if fmt == 'hf' else 'file'} there")
    rows_of = {"sft": sft_rows, "dpo": dpo_rows}[kind]
    with Session(engine) as session:
        rows = list(rows_of(session, build_messages, round_id=round_id))
    if not rows:
        raise NothingToExport(f"no {kind} data in the store" + (f" for round {round_id}" if round_id else "")
                         + "; collect some first")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        write_jsonl(out, rows)
    else:
        from collections import Counter

        from datasets import Dataset

        from promptloop.store.cards import dataset_card, write_card

        tmp_dir = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        try:  # the Hub's layout (what push_to_hub writes): load_dataset(folder) and TRL's CLI read it as it is
            (tmp_dir / "data").mkdir()
            Dataset.from_list(rows).to_parquet(str(tmp_dir / HF_DATA_FILE))
            write_card(tmp_dir, dataset_card(kind, len(rows), rounds=[round_id] if round_id is not None else [],
                                             rules=dict(Counter(r.get("rule") or kind for r in rows)),
                                             data_path="data/train-*"))
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp_dir, out)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return len(rows)
