"""Node-level traces: every node call of every graph run becomes a TraceEvent row.

LangGraph's checkpoints say what the state was; traces say what each agent
did, how long it took and what it returned, in the store where the trace
viewer and `promptloop traces` read them. Large artifacts are referenced by
path only.
"""

from __future__ import annotations

import inspect
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from sqlalchemy.engine import Engine

from promptloop.store.engine import session_scope
from promptloop.store.models import TraceEvent

MAX_JSON_CHARS = 200_000


class TraceRecorder:
    def __init__(self, engine: Engine | None):
        self.engine = engine

    def record(self, **fields: Any) -> None:
        if self.engine is None:
            return
        with session_scope(self.engine) as s:
            s.add(TraceEvent(**fields))


def traced(recorder: TraceRecorder | Callable[[], TraceRecorder], graph: str, node: str, fn: Callable) -> Callable:
    """Wrap a node ``fn(state, runtime)`` so each call is recorded with timing, input, output and error.

    ``recorder`` may be a zero-argument callable, resolved at call time (lazily built agents).
    """
    get_recorder = recorder if callable(recorder) and not isinstance(recorder, TraceRecorder) else (lambda: recorder)
    accepts_runtime = "runtime" in inspect.signature(fn).parameters

    def wrapper(state: dict, config: RunnableConfig, runtime: Runtime) -> Any:
        conf = config.get("configurable", {}) if config else {}
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        ctx = getattr(runtime, "context", None)
        version = getattr(ctx, "model_version", None)
        try:
            out = fn(state, runtime) if accepts_runtime else fn(state)
        except Exception as exc:
            get_recorder().record(thread_id=conf.get("thread_id", "?"), run_id=conf.get("run_id"), graph=graph, node=node,
                            model_version=version, started_at=started, ended_at=datetime.now(UTC),
                            duration_ms=(time.perf_counter() - t0) * 1000, input=_jsonable(state), output={},
                            error="".join(traceback.format_exception_only(type(exc), exc)).strip())
            raise
        get_recorder().record(thread_id=conf.get("thread_id", "?"), run_id=conf.get("run_id"), graph=graph,
                              node=node, model_version=version, started_at=started, ended_at=datetime.now(UTC),
                              duration_ms=(time.perf_counter() - t0) * 1000, input=_jsonable(state),
                              output=_jsonable(out if isinstance(out, dict) else {"value": out}))
        return out

    wrapper.__name__ = node
    return wrapper


def _jsonable(obj: Any) -> dict:
    import json

    text = json.dumps(obj, default=str, ensure_ascii=False)
    if len(text) > MAX_JSON_CHARS:
        return {"truncated": True, "chars": len(text), "head": text[:MAX_JSON_CHARS]}
    return json.loads(text)
