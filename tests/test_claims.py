"""Sharing a job between workers: no prompt twice, none lost, dead workers' claims taken over.

Runs on SQLite and on a real PostgreSQL (where the claim is FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from sqlmodel import Session, select

from promptloop.store import claims
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import WorkItem


def _prompts(engine, n: int) -> list[int]:
    with session_scope(engine) as s:
        return [repo.add_prompt(s, f"prompt number {i}")[0].id for i in range(n)]


def test_concurrent_workers_split_a_job_without_overlap(engine):
    ids = _prompts(engine, 50)
    processed: dict[str, list[int]] = {"w1": [], "w2": []}
    start = threading.Barrier(2)

    def work(name: str) -> None:
        claims.enqueue(engine, "job", ids)  # both enqueue: idempotent
        start.wait()
        while got := claims.claim(engine, "job", name, 4):
            time.sleep(0.01)  # the "work"
            processed[name].extend(got)
            assert claims.complete(engine, "job", name, got) == len(got)

    threads = [threading.Thread(target=work, args=(w,)) for w in processed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    everything = processed["w1"] + processed["w2"]
    assert sorted(everything) == sorted(ids)  # no losses, no duplicates
    assert processed["w1"] and processed["w2"]
    assert claims.progress(engine, "job") == {"done": 50}
    assert claims.done_by_worker(engine, "job") == {w: len(p) for w, p in processed.items()}
    with Session(engine) as s:
        assert len(s.exec(select(WorkItem)).all()) == 50


def test_restarted_worker_gets_its_own_claims_back_and_stale_claims_move(engine):
    ids = _prompts(engine, 6)
    assert claims.enqueue(engine, "job", ids) == 6
    assert claims.enqueue(engine, "job", ids) == 0
    first = claims.claim(engine, "job", "w1", 3)
    assert first == ids[:3]
    assert claims.claim(engine, "job", "w1", 3) == first  # w1 restarted: same chunk, so it resumes its checkpoint
    assert claims.claim(engine, "job", "w2", 10) == ids[3:]
    assert claims.claim(engine, "job", "w3", 10) == []  # all claimed, none stale
    taken = claims.claim(engine, "job", "w3", 10, lease_s=0)  # w1 and w2 "died": their leases expired
    assert sorted(taken) == sorted(ids)
    assert claims.complete(engine, "job", "w1", first) == 0  # w1 lost its claim; w3 owns it now
    assert claims.complete(engine, "job", "w3", taken) == 6
    with Session(engine) as s:
        attempts = Counter(r.attempts for r in s.exec(select(WorkItem)))
    assert attempts == {2: 6}


def test_adapters_of_unfinished_jobs_are_in_use(engine):
    """What a served vLLM keeps loaded: the versions that unfinished shared jobs sample with."""
    ids = _prompts(engine, 4)
    claims.enqueue(engine, "pairs-r1-a", ids[:2], adapter="r1-dpo")
    claims.enqueue(engine, "pairs-r1-b", ids[2:], adapter="r0-sft")
    claims.enqueue(engine, "sft-r0-c", ids, adapter=None)  # the base model: nothing to keep loaded
    assert claims.adapters_in_use(engine) == {"r1-dpo", "r0-sft"}
    got = claims.claim(engine, "pairs-r1-b", "w1", 10)
    claims.complete(engine, "pairs-r1-b", "w1", got)
    assert claims.adapters_in_use(engine) == {"r1-dpo"}  # a finished job frees its adapter
