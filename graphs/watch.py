"""Periodic mode: learn from the prompts apps actually send (`promptloop loop watch`).

Every cycle collects preference pairs on traffic prompts that no collection
has seen yet (with the current champion), into the open watch round; once
that round holds at least ``min_new_pairs`` pairs it trains a DPO version
from the champion, evaluates it on the held-out set and promotes or rejects
it exactly as the loop does, then opens the next round.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from promptloop.evaluation.runner import EvalConfig, load_items
from promptloop.graphs.loop import Log, LoopDeps, decide
from promptloop.learners.config import load_config
from promptloop.store.engine import session_scope
from promptloop.store.models import Candidate, PreferencePair, Prompt, Round, Split
from promptloop.store.versions import ensure_base, get_version


@dataclass
class WatchConfig:
    min_new_pairs: int = 32
    interval_s: float = 300.0
    n: int | None = None  # candidates per prompt; None = generation.n
    batch_size: int | None = None  # None = collect.chunk_size
    margin: float = 0.1
    rule: str = "margin"
    eval_limit: int | None = 32
    redteam_limit: int | None = 12
    dpo_config: str | None = None
    max_steps: int | None = None


@dataclass
class WatchCycle:
    round_index: int
    new_prompts: int
    pairs_in_round: int
    trained: str | None = None
    promoted: bool | None = None
    reason: str = ""
    eval: dict = field(default_factory=dict)


def open_round(engine: Engine) -> int:
    """The open watch round, or a new one after the highest round index in the store."""
    with session_scope(engine) as s:
        row = s.exec(select(Round).where(Round.status == "watch-open").order_by(Round.index)).first()
        if row is None:
            top = s.exec(select(func.max(Round.index))).first()
            row = Round(index=(top + 1) if top is not None else 0, status="watch-open", stage="collect")
            s.add(row)
            s.flush()
        return row.index


def unseen_traffic(engine: Engine, per_client: int) -> list[Prompt]:
    """Accepted traffic prompts no collection has seen, at most ``per_client`` from each client (oldest first).

    The quota is what keeps one app (or one abuser) from filling a round:
    the rest of a busy client's prompts wait for later rounds. Quarantined
    traffic (split quarantine) is never picked.
    """
    seen = select(Candidate.prompt_id).distinct()
    with Session(engine) as s:
        rows = list(s.exec(select(Prompt).where(Prompt.source == "traffic", Prompt.split == Split.train,
                                                Prompt.id.not_in(seen)).order_by(Prompt.id)))
    taken: Counter[str | None] = Counter()
    picked = []
    for p in rows:
        taken[p.client] += 1
        if taken[p.client] <= per_client:
            picked.append(p)
    return picked


def pairs_in_round(engine: Engine, round_index: int) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(PreferencePair).join(Round, Round.id == PreferencePair.round_id)
                      .where(Round.index == round_index)).one()


def watch_cycle(deps: LoopDeps, cfg: WatchConfig, log: Log | None = None) -> WatchCycle:
    say = log or (lambda _m: None)
    ensure_base(deps.engine, deps.settings.base_model)
    r = open_round(deps.engine)
    champion = get_version(deps.engine, "champion").name
    new = unseen_traffic(deps.engine, deps.settings.traffic.max_per_client_per_round)
    if new:
        say(f"round {r}: collecting pairs on {len(new)} new traffic prompt(s) with {champion}")
        deps.collect("pairs", prompts=new, round_index=r, n=cfg.n, model_version=champion, batch_size=cfg.batch_size,
                split="traffic", key_extra={"prompt_ids": [p.id for p in new]}, max_refine_steps=0,
                margin=cfg.margin, rule=cfg.rule)
    cycle = WatchCycle(r, len(new), pairs_in_round(deps.engine, r))
    if cycle.pairs_in_round < cfg.min_new_pairs:
        cycle.reason = f"{cycle.pairs_in_round} of {cfg.min_new_pairs} pairs needed for a training round"
        say(f"round {r}: {cycle.reason}")
        return cycle
    tcfg = load_config("dpo", cfg.dpo_config, round_index=r, parent=champion, name=f"watch-r{r}-dpo",
                       max_steps=cfg.max_steps, data_rounds="current")
    res = deps.train("dpo", tcfg)
    cycle.trained = res.version.name
    rep = deps.evaluate([champion, res.version.name], EvalConfig(limit=cfg.eval_limit, redteam_limit=cfg.redteam_limit),
                   progress=lambda m: say(f"  {m}"))
    cycle.eval = {x.system: x.metrics for x in rep.results}
    decision = decide(deps.engine, deps.settings.promotion, champion, res.version.name, cycle.eval,
                      {x.system: load_items(x.outputs_path) for x in rep.results if x.outputs_path})
    cycle.promoted, cycle.reason = decision["promoted"], decision["reason"]
    with session_scope(deps.engine) as s:
        row = s.exec(select(Round).where(Round.index == r)).one()
        row.status, row.stage, row.notes = "done", "promote", {"watch": True, **decision}
        s.add(row)
    say(f"round {r}: {'promoted' if cycle.promoted else 'kept champion'}: {cycle.reason}")
    return cycle


def watch(deps: LoopDeps, cfg: WatchConfig, *, log: Log | None = None, max_cycles: int | None = None,
          sleep: Callable[[float], None] = time.sleep) -> list[WatchCycle]:
    cycles: list[WatchCycle] = []
    while True:
        cycles.append(watch_cycle(deps, cfg, log))
        if max_cycles is not None and len(cycles) >= max_cycles:
            return cycles
        sleep(cfg.interval_s)
