"""Reading traces back: runs (one per graph thread) and their node events."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.errors import PromptloopError
from promptloop.store.models import TraceEvent


def list_runs(engine: Engine, *, limit: int = 20, graph: str | None = None) -> list[dict]:
    q = (select(TraceEvent.thread_id, TraceEvent.graph, func.min(TraceEvent.started_at),
                func.max(TraceEvent.ended_at), func.count(), func.sum(TraceEvent.duration_ms),
                func.count(TraceEvent.error))
         .group_by(TraceEvent.thread_id, TraceEvent.graph)
         .order_by(func.min(TraceEvent.id).desc()).limit(limit))
    if graph:
        q = q.where(TraceEvent.graph == graph)
    with Session(engine) as s:
        rows = s.exec(q).all()
    return [{"trace_id": t, "graph": g, "started_at": a, "ended_at": b, "nodes": n,
             "node_ms": round(ms or 0.0, 1), "errors": e} for t, g, a, b, n, ms, e in rows]


def run_events(engine: Engine, trace_id: str) -> list[TraceEvent]:
    """Events of one run; a unique prefix of the id is enough."""
    with Session(engine) as s:
        ids = s.exec(select(TraceEvent.thread_id).where(TraceEvent.thread_id.startswith(trace_id, autoescape=True))
                     .distinct()).all()
        if not ids:
            raise PromptloopError(f"no trace with id '{trace_id}'")
        if len(ids) > 1:
            raise PromptloopError(f"trace id '{trace_id}' is ambiguous: {', '.join(i[:12] for i in ids[:5])}")
        return list(s.exec(select(TraceEvent).where(TraceEvent.thread_id == ids[0]).order_by(TraceEvent.id)))


def item_key(event: TraceEvent, change: dict) -> tuple[str, int]:
    """Which item a node's change is about: its index within the graph instance (a collection part) it ran in.

    A node's checkpoint namespace is its graph's namespace plus ``node:task`` (``part:1|critique:7``); the
    nodes of one graph instance share everything before that last segment.
    """
    ns = (event.input or {}).get("checkpoint_ns", "") or ""
    return ns.rpartition("|")[0], change.get("i", 0)


def fold_events(events: list[TraceEvent]) -> Iterator[tuple[TraceEvent, dict, dict]]:
    """(event, the item as that node left it, what the node changed), in run order: traces hold changes only."""
    items: dict[tuple[str, int], dict] = {}
    for e in events:
        for change in (e.output or {}).get("items", []) or []:
            if isinstance(change, dict):
                item = items.setdefault(item_key(e, change), {})
                item.update(change)
                yield e, item, change


def fold_items(events: list[TraceEvent]) -> list[dict]:
    """Each item of a run as its last node left it, rebuilt from what every node changed, in run order."""
    items = {id(item): item for _, item, _ in fold_events(events)}
    return list(items.values())
