"""OpenTelemetry export of graph runs: a span per graph run and per node (OpenInference's LangChain instrumentor,
which LangGraph's callbacks drive), with the model calls under their node (agents/llm/telemetry.py).

``telemetry.otlp_endpoint`` (or OTEL_EXPORTER_OTLP_ENDPOINT) sends them to any OTLP/HTTP collector: Phoenix,
Langfuse, Jaeger, an OpenTelemetry Collector. LangSmith needs none of this: LANGSMITH_TRACING=true and
LANGSMITH_API_KEY make LangGraph trace there by itself.
"""

from __future__ import annotations

import os
from typing import Any

from promptloop.agents.llm.telemetry import set_provider
from promptloop.config import TelemetrySettings
from promptloop.errors import PromptloopError

_instrumentor: Any = None


class TelemetryUnavailable(PromptloopError, RuntimeError):
    """OpenTelemetry export asked for, its packages not installed."""


def instrument(provider: Any) -> None:
    """Send graph, node and model-call spans to ``provider`` (a TracerProvider) from now on."""
    global _instrumentor
    try:
        from openinference.instrumentation.langchain import LangChainInstrumentor
    except ImportError:
        raise TelemetryUnavailable("OpenTelemetry export needs the otel extra: pip install 'promptloop[otel]'") from None
    uninstrument()
    _instrumentor = LangChainInstrumentor()
    _instrumentor.instrument(tracer_provider=provider)
    set_provider(provider)


def uninstrument() -> None:
    global _instrumentor
    if _instrumentor is not None:
        _instrumentor.uninstrument()
        _instrumentor = None
    set_provider(None)


def configure(settings: TelemetrySettings) -> bool:
    """An OTLP/HTTP exporter when an endpoint is configured; True when spans are now exported."""
    endpoint = settings.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or _instrumentor is not None:
        return _instrumentor is not None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TelemetryUnavailable("telemetry.otlp_endpoint needs the otel extra: pip install 'promptloop[otel]'"
                                   ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    url = endpoint.rstrip("/") + ("" if endpoint.rstrip("/").endswith("/v1/traces") else "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    instrument(provider)
    return True
