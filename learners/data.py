"""Training datasets read from the store, in the conversational formats TRL expects.

The prompt side is the rewriter's own inference template (``messages_for``),
so the model is trained on exactly what it sees when an app calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from promptloop.errors import PromptloopError
from promptloop.store.exporter import BuildMessages, dpo_rows, sft_rows
from promptloop.store.models import PreferencePair, Round, SFTExample

if TYPE_CHECKING:
    from datasets import Dataset


class NothingToTrain(PromptloopError, ValueError):
    """The store has no training rows for the requested rounds."""


@dataclass
class TrainingData:
    rows: list[dict]
    round_index: int
    round_ids: list[int]
    provenance: dict = field(default_factory=dict)


def latest_round_with(engine: Engine, kind: str) -> int | None:
    table = SFTExample if kind == "sft" else PreferencePair
    with Session(engine) as s:
        return s.exec(select(func.max(Round.index)).join(table, table.round_id == Round.id)).first()


def round_ids(engine: Engine, round_index: int, scope: str) -> list[int]:
    with Session(engine) as s:
        q = select(Round.id).where(Round.index <= round_index if scope == "all" else Round.index == round_index)
        return list(s.exec(q))


def load_training_data(engine: Engine, kind: str, build_messages: BuildMessages, *, round_index: int | None,
                       scope: str = "current", safety_share: float = 1.0) -> TrainingData:
    """SFT rows (accepted examples) or DPO rows (pairs) of a round, or of every round up to it.

    Safety pairs (rule ``safety``) make at most ``safety_share`` of the DPO rows (the first ones collected are
    kept), so a round rich in flagged requests does not turn into a harmlessness-only round; a round with
    nothing but safety pairs keeps them all."""
    if round_index is None:
        round_index = latest_round_with(engine, kind)
        if round_index is None:
            raise NothingToTrain(f"no {'SFT examples' if kind == 'sft' else 'preference pairs'} in the store; "
                                 f"run `promptloop collect {'sft' if kind == 'sft' else 'pairs'}` first")
    ids = round_ids(engine, round_index, scope)
    rows_of = sft_rows if kind == "sft" else dpo_rows
    rows: list[dict] = []
    with Session(engine) as s:
        for rid in ids:
            rows.extend(rows_of(s, build_messages, round_id=rid))
    if not rows:
        where = f"round {round_index}" if scope == "current" else f"rounds 0..{round_index}"
        raise NothingToTrain(f"no {'accepted SFT examples' if kind == 'sft' else 'preference pairs'} in {where}; "
                             f"collect some first (`promptloop collect {'sft' if kind == 'sft' else 'pairs'} "
                             f"--round {round_index}`)")
    dropped = 0
    if kind == "dpo":
        rows, dropped = cap_safety(rows, safety_share)
    id_key = "example_id" if kind == "sft" else "pair_id"
    provenance = {"kind": kind, "round_index": round_index, "scope": scope, "round_ids": ids, "rows": len(rows),
                  f"{id_key}s": [r[id_key] for r in rows]}
    if kind == "dpo":
        provenance["mean_margin"] = round(sum(r["margin"] for r in rows) / len(rows), 4)
        provenance["safety_pairs"] = sum(r.get("rule") == "safety" for r in rows)
        provenance["safety_pairs_dropped"] = dropped
    return TrainingData(rows=rows, round_index=round_index, round_ids=ids, provenance=provenance)


def cap_safety(rows: list[dict], share: float) -> tuple[list[dict], int]:
    """``rows`` with safety pairs cut to ``share`` of the result (order kept), and how many were cut."""
    safety = [i for i, r in enumerate(rows) if r.get("rule") == "safety"]
    others = len(rows) - len(safety)
    if not safety or not others or share >= 1:
        return rows, 0
    cut = set(safety[int(share / (1 - share) * others):])
    return [r for i, r in enumerate(rows) if i not in cut], len(cut)


def to_dataset(data: TrainingData, kind: str) -> Dataset:
    """Only the columns TRL reads: ids and margins stay in the provenance."""
    from datasets import Dataset

    if kind == "sft":  # conversational prompt/completion: the loss covers the rewrite only
        return Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}
                                  for r in data.rows])
    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in data.rows])
