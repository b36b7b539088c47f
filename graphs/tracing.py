"""How a module-level node becomes a graph node: run dependencies bound, each call traced.

Nodes are plain module-level functions ``fn(state, runtime: Runtime[Context])``
(LangGraph's templates' shape), so each can be called and tested alone. The
agents and the store a node needs travel in the run's context; a graph built
with its dependencies fills them in when the caller's context has none.

LangGraph's checkpoints already hold every state; a trace row holds what the
node *changed* (per item, the fields that differ, keyed by the item's index
and prompt) and a reference to the checkpoint thread, not a second copy.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from sqlalchemy.engine import Engine

from promptloop.errors import redact
from promptloop.store.engine import session_scope
from promptloop.store.models import TraceEvent

MAX_JSON_CHARS = 200_000
Provider = Callable[[], Any]


class TraceRecorder:
    def __init__(self, engine: Engine | None):
        self.engine = engine

    def record(self, **fields: Any) -> None:
        if self.engine is None:
            return
        with session_scope(self.engine) as s:
            s.add(TraceEvent(**fields))


def graph_node(graph: str, node: str, fn: Callable, *, context_type: type, trace: bool = True,
               **deps: Provider) -> Callable:
    """``fn(state, runtime)`` with ``deps`` filled into context fields left None, and each call recorded.

    ``deps`` are zero-argument providers resolved at call time (so models load
    on the first run, in LangGraph's worker thread, not when the graph is
    built). The recorder is the context's ``agents.recorder`` when it has one.
    """

    def wrapper(state: dict, config: RunnableConfig, runtime: Runtime) -> Any:
        ctx = runtime.context if runtime.context is not None else context_type()
        missing = {k: get() for k, get in deps.items() if getattr(ctx, k, None) is None}
        if missing or runtime.context is None:
            runtime = runtime.override(context=replace(ctx, **missing))
        if not trace:
            return fn(state, runtime)
        recorder = getattr(getattr(runtime.context, "agents", None), "recorder", None)
        conf = config.get("configurable", {}) if config else {}
        row = dict(thread_id=conf.get("thread_id", "?"), run_id=conf.get("run_id"), graph=graph, node=node,
                   model_version=getattr(runtime.context, "model_version", None), started_at=datetime.now(UTC),
                   input=state_reference(state, conf))
        t0 = time.perf_counter()
        try:
            out = fn(state, runtime)
        except Exception as exc:
            if recorder is not None:
                recorder.record(**row, ended_at=datetime.now(UTC), duration_ms=(time.perf_counter() - t0) * 1000,
                                output={}, error=redact("".join(traceback.format_exception_only(type(exc), exc)).strip()))
            raise
        if recorder is not None:
            recorder.record(**row, ended_at=datetime.now(UTC), duration_ms=(time.perf_counter() - t0) * 1000,
                            output=state_delta(state, out))
        return out

    wrapper.__name__ = node
    wrapper.__doc__ = fn.__doc__
    return wrapper


def state_reference(state: dict, conf: dict) -> dict:
    """Where the node's input lives (the checkpoint thread) and its size, instead of a copy of it."""
    ref: dict[str, Any] = {"thread_id": conf.get("thread_id"), "checkpoint_ns": conf.get("checkpoint_ns") or ""}
    if isinstance(state, dict) and isinstance(state.get("items"), list):
        ref["items"] = len(state["items"])
    return ref


def state_delta(state: dict, out: Any) -> dict:
    """What a node changed: per item the fields that differ (plus ``i`` and ``prompt`` to name it)."""
    if not isinstance(out, dict):
        return _jsonable({"value": out})
    delta = {k: v for k, v in out.items() if k != "items"}
    before = state.get("items") if isinstance(state, dict) else None
    after = out.get("items")
    if isinstance(after, list):
        before = before if isinstance(before, list) and len(before) == len(after) else [{}] * len(after)
        items = []
        for i, (old, new) in enumerate(zip(before, after, strict=True)):
            changed = {k: v for k, v in new.items() if old.get(k) != v}
            if changed:
                items.append({"i": i, "prompt": new.get("prompt", ""), **changed})
        delta["items"] = items
    return _jsonable(delta)


def _jsonable(obj: Any) -> dict:
    text = json.dumps(obj, default=str, ensure_ascii=False)
    if len(text) > MAX_JSON_CHARS:
        return {"truncated": True, "chars": len(text), "head": text[:MAX_JSON_CHARS]}
    return json.loads(text)
