"""The Python API apps embed: ``rewrite``, ``rewrite_many``, ``arewrite`` and ``stream_rewrite``.

Each call is one run of the rewrite graph on a new checkpointed thread whose
id is returned as ``trace_id`` (the key of `promptloop traces show`). Pass a
``Services`` to share loaded models between calls; without one, a default
Services built from Settings() is created once and reused.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel, Field

from promptloop.config import Settings
from promptloop.services import Services


class RewriteOutput(BaseModel):
    prompt: str
    final_prompt: str
    refused: bool = False
    reason: str = ""
    fallback: str | None = Field(None, description="trimmed | core: no candidate passed the output guard, and this "
                                 "is the best one without its flagged sentences, or the request's core as the "
                                 "prompt; scores, reward and critique are then empty (no critic judged this text)")
    scores: dict[str, float] = Field(default_factory=dict, description="harmless/accurate/helpful of the final prompt")
    reward: dict[str, Any] = Field(default_factory=dict, description="reward dimensions and total")
    critique: dict[str, Any] = Field(default_factory=dict)
    verdict: dict[str, Any] = Field(default_factory=dict, description="the guard's verdict on the user prompt")
    final_verdict: dict[str, Any] = Field(default_factory=dict)
    candidates: list[str] = Field(default_factory=list)
    refine_steps: int = 0
    trail: list[dict] = Field(default_factory=list)
    model_version: str | None = None
    trace_id: str


@functools.cache
def _default_services() -> Services:
    return Services(Settings())


def _prepare(prompts: Sequence[str], services: Services | None, model_version: str | None, thread_id: str | None,
             overrides: dict) -> tuple[Services, dict, dict, Any]:
    from promptloop.errors import PromptloopError

    rt = services or _default_services()
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise PromptloopError("empty prompt")
        if len(p) > rt.settings.max_prompt_chars:
            raise PromptloopError(f"prompt of {len(p)} characters is over the limit of {rt.settings.max_prompt_chars}")
    adapter = rt.resolve_model_version(model_version)
    ctx = rt.rewrite_context(model_version=adapter, **overrides)
    tid = thread_id or uuid.uuid4().hex
    config = {"configurable": {"thread_id": tid, "run_id": uuid.uuid4().hex}}
    state = {"items": [{"prompt": p.strip()} for p in prompts]}
    return rt, config, state, ctx


def _outputs(values: dict, trace_id: str, version: str | None) -> list[RewriteOutput]:
    out = []
    for it in values["items"]:
        judged = not it.get("fallback")
        crit = (it.get("current_critique") or {}) if judged else {}
        out.append(RewriteOutput(
            prompt=it["prompt"], final_prompt=it.get("final_prompt", ""), refused=bool(it.get("refused")),
            reason=it.get("reason", ""), fallback=it.get("fallback"), critique=crit,
            reward=(it.get("current_reward") or {}) if judged else {},
            scores={k: crit[k] for k in ("harmless", "accurate", "helpful") if k in crit},
            verdict=it.get("verdict") or {}, final_verdict=it.get("final_verdict") or {},
            candidates=it.get("candidates") or [], refine_steps=it.get("steps", 0), trail=it.get("trail") or [],
            model_version=version, trace_id=trace_id))
    return out


def rewrite_many(prompts: Sequence[str], *, services: Services | None = None, model_version: str | None = "champion",
                 thread_id: str | None = None, **overrides: Any) -> list[RewriteOutput]:
    """Rewrite a batch in one graph run (model calls batched across prompts), results in input order."""
    rt, config, state, ctx = _prepare(prompts, services, model_version, thread_id, overrides)
    values = rt.rewrite_graph.invoke(state, config, context=ctx)
    _finished(rt, config)
    return _outputs(values, config["configurable"]["thread_id"], ctx.model_version or "base")


def _finished(rt: Services, config: dict) -> None:
    """A run that returned reached its end (the rewrite graph has no interrupts; a failure raises): recorded in the
    store, so `db prune` may drop its checkpoints (its trace events stay)."""
    from promptloop.store.threads import record_finished

    record_finished(rt.engine, config["configurable"]["thread_id"], "rewrite")


def rewrite(prompt: str, **kwargs: Any) -> RewriteOutput:
    """Rewrite one prompt; keyword arguments as for ``rewrite_many`` (n=, max_refine_steps=, ...)."""
    return rewrite_many([prompt], **kwargs)[0]


async def arewrite(prompt: str, **kwargs: Any) -> RewriteOutput:
    """Async variant: runs the graph off the event loop so an async app keeps serving."""
    return await asyncio.to_thread(rewrite, prompt, **kwargs)


def stream_rewrite(prompts: str | Sequence[str], *, services: Services | None = None,
                   model_version: str | None = "champion", thread_id: str | None = None,
                   **overrides: Any) -> Iterator[tuple[str, Any]]:
    """Yield ("node", name) after each node finishes, then ("result", [RewriteOutput, ...])."""
    batch = [prompts] if isinstance(prompts, str) else list(prompts)
    rt, config, state, ctx = _prepare(batch, services, model_version, thread_id, overrides)
    for update in rt.rewrite_graph.stream(state, config, context=ctx, stream_mode="updates"):
        for node in update:
            yield "node", node
    values = rt.rewrite_graph.get_state(config).values
    _finished(rt, config)
    yield "result", _outputs(values, config["configurable"]["thread_id"], ctx.model_version or "base")


def resume_rewrite(thread_id: str, *, services: Services | None = None, model_version: str | None = "champion",
                   **overrides: Any) -> list[RewriteOutput]:
    """Continue an interrupted run from its last checkpoint; finished nodes are not run again."""
    rt = services or _default_services()
    adapter = rt.resolve_model_version(model_version)
    config = {"configurable": {"thread_id": thread_id, "run_id": uuid.uuid4().hex}}
    values = rt.rewrite_graph.invoke(None, config, context=rt.rewrite_context(model_version=adapter, **overrides))
    _finished(rt, config)
    return _outputs(values, thread_id, adapter or "base")
