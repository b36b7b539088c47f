"""OpenTelemetry spans of model calls, in the GenAI semantic conventions (and OpenInference's LLM kind), so a trace
viewer (Phoenix, Langfuse, any OTLP collector) shows each batched generation under the graph node that made it.

Every ``ChatModel.generate`` is wrapped once, when its class is defined (``ChatModel.__init_subclass__``): no
backend can forget it. Without opentelemetry installed, or with no tracer provider configured, a call costs one
no-op span.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

_provider: Any = None  # set by graphs.otel.instrument; otherwise the process's global provider


def set_provider(provider: Any) -> None:
    global _provider
    _provider = provider


def tracer() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return (_provider or trace.get_tracer_provider()).get_tracer("promptloop.llm")


def _node_context() -> Any:
    """The graph node's span as parent: OpenInference's LangChain spans are not the OpenTelemetry current span
    (callbacks cannot enter a context), so the node running this call is looked up from LangChain's run config."""
    try:
        from openinference.instrumentation.langchain import LangChainInstrumentor, get_current_span
        from opentelemetry import trace
    except ImportError:
        return None
    if not LangChainInstrumentor().is_instrumented_by_opentelemetry:  # else it prints a warning per call
        return None
    span = get_current_span()
    return trace.set_span_in_context(span) if span is not None else None


def traced(generate: Callable[..., list[list[str]]]) -> Callable[..., list[list[str]]]:
    @functools.wraps(generate)
    def wrapper(self: Any, conversations: Any, params: Any, *args: Any, adapter: str | None = None,
                **kwargs: Any) -> list[list[str]]:
        t = tracer()
        if t is None:
            return generate(self, conversations, params, *args, adapter=adapter, **kwargs)
        from opentelemetry.trace import SpanKind, Status, StatusCode

        model = getattr(self, "name", type(self).__name__)
        attributes = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": type(self).__name__,
            "gen_ai.request.model": model, "gen_ai.request.max_tokens": params.max_new_tokens,
            "gen_ai.request.temperature": params.temperature, "gen_ai.request.top_p": params.top_p,
            "gen_ai.request.choice.count": params.n, "gen_ai.request.seed": params.seed,
            "openinference.span.kind": "LLM", "llm.model_name": model,
            "promptloop.conversations": len(conversations), "promptloop.adapter": adapter or "base",
        }
        with t.start_as_current_span(f"chat {model}", context=_node_context(), kind=SpanKind.CLIENT,
                                     attributes={k: v for k, v in attributes.items() if v is not None}) as span:
            try:
                out = generate(self, conversations, params, *args, adapter=adapter, **kwargs)
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            span.set_attribute("promptloop.completions", sum(len(c) for c in out))
            span.set_attribute("promptloop.completion_chars", sum(len(x) for c in out for x in c))
            return out

    wrapper.__promptloop_traced__ = True  # type: ignore[attr-defined]
    return wrapper
