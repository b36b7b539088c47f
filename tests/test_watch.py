"""Periodic mode: app traffic is stored, and `loop watch` trains once enough new pairs have accumulated."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from promptloop.api import rewrite_many
from promptloop.config import Settings
from promptloop.graphs.watch import WatchConfig, watch, watch_cycle
from promptloop.services import Services
from promptloop.store.models import ModelVersion, Prompt, Round
from promptloop.store.shipped import import_shipped


@pytest.mark.slow
def test_traffic_is_stored_and_watch_trains_on_it(tmp_path, smollm_path):
    settings = Settings(home=tmp_path / "home", base_model=str(smollm_path), device="cpu",
                        generation={"max_new_tokens": 24}, critic={"use_llm": False})
    rt = Services(settings)
    import_shipped(rt.engine)
    with Session(rt.engine) as s:
        eval_prompt = s.exec(select(Prompt).where(Prompt.split == "eval")).first().text
    rewrite_many(["a dragon flying over a lake", "a robot dancing in the street", eval_prompt], services=rt, n=2,
                 max_refine_steps=0)
    opted_out = Services(settings.model_copy(update={"record_traffic": False}))
    opted_out.__dict__.update({k: rt.__dict__[k] for k in ("_models", "embedder", "guard")})
    rewrite_many(["an owl at midnight"], services=opted_out, n=1, max_refine_steps=0)
    with Session(rt.engine) as s:
        traffic = s.exec(select(Prompt).where(Prompt.source == "traffic")).all()
        assert sorted(p.text for p in traffic) == ["a dragon flying over a lake", "a robot dancing in the street"]
        assert all(p.split == "train" for p in traffic)
        assert s.exec(select(Prompt).where(Prompt.text == eval_prompt)).one().split == "eval"  # no leak

    first = watch_cycle(rt, WatchConfig(min_new_pairs=100, n=3, margin=0.0))
    assert first.new_prompts == 2 and first.trained is None and "of 100 pairs" in first.reason
    assert first.pairs_in_round >= 1

    cfg = WatchConfig(min_new_pairs=1, n=3, margin=0.0, max_steps=1, eval_limit=2, redteam_limit=0)
    naps: list[float] = []
    cycles = watch(rt, cfg, max_cycles=2, sleep=naps.append)
    assert naps == [cfg.interval_s]
    trained, idle = cycles
    assert trained.new_prompts == 0 and trained.trained == f"watch-r{first.round_index}-dpo"
    assert trained.promoted is not None and trained.reason.startswith("judge_total")  # the gate says why
    assert set(trained.eval) == {"base", trained.trained}
    assert idle.round_index == first.round_index + 1 and idle.trained is None and idle.pairs_in_round == 0
    with Session(rt.engine) as s:
        v = s.exec(select(ModelVersion).where(ModelVersion.name == trained.trained)).one()
        assert v.algorithm == "dpo" and v.data_provenance["rows"] == first.pairs_in_round
        assert v.status in ("champion", "rejected")
        closed = s.exec(select(Round).where(Round.index == first.round_index)).one()
        assert closed.status == "done" and closed.notes["promoted"] == trained.promoted
