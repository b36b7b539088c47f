"""OpenTelemetry spans of one rewrite: the graph run, its nodes and the model calls under them, in an in-memory
exporter (the same instrument() an OTLP endpoint goes through)."""

from __future__ import annotations

import json

import pytest

from promptloop.api import rewrite_many
from promptloop.services import Services


@pytest.fixture
def spans():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from promptloop.graphs.otel import instrument, uninstrument

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(provider)
    yield exporter
    uninstrument()


def test_one_rewrite_exports_graph_node_and_model_call_spans(graph_runtime, spans, tmp_path):
    rt = Services(graph_runtime.settings.model_copy(update={
        "home": tmp_path, "database_url": f"sqlite:///{tmp_path / 'p.db'}",
        "critic": graph_runtime.settings.critic.model_copy(update={"use_llm": False})}))
    rt.__dict__.update({"_models": graph_runtime._models, "embedder": graph_runtime.embedder,
                        "guard": graph_runtime.guard})
    [out] = rewrite_many(["a cat playing piano"], services=rt, n=2, max_refine_steps=0, model_version="base",
                         max_new_tokens=24)
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    [root] = [s for s in finished if s.parent is None]
    assert root.name == "rewrite" and root.attributes["openinference.span.kind"] == "CHAIN"
    assert "a cat playing piano" in root.attributes["input.value"]
    assert json.dumps(out.final_prompt)[1:-1] in root.attributes["output.value"]
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}  # one trace per graph run
    nodes = [s.name for s in sorted(finished, key=lambda s: s.start_time) if s.parent is not None
             and s.parent.span_id == root.context.span_id and not s.name.startswith("route")]
    assert nodes == ["guard_input", "rewrite", "critique", "pick_best", "guard_output"]
    # the model call sits under the node that made it, in the GenAI semantic conventions
    llm = [s for s in finished if s.attributes.get("openinference.span.kind") == "LLM"]
    assert llm, [s.name for s in finished]
    call = llm[0]
    assert by_id[call.parent.span_id].name == "rewrite" and by_id[call.parent.span_id].parent.span_id == \
        root.context.span_id
    a = call.attributes
    assert (a["gen_ai.operation.name"], a["gen_ai.request.choice.count"], a["gen_ai.request.max_tokens"]) == (
        "chat", 2, 24)
    assert a["gen_ai.request.model"] == call.name.removeprefix("chat ") and a["promptloop.completions"] == 2
    assert a["promptloop.adapter"] == "base"


def test_no_endpoint_means_no_export(monkeypatch):
    from promptloop.config import TelemetrySettings
    from promptloop.graphs.otel import configure

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert configure(TelemetrySettings()) is False
