"""Optional OpenTelemetry traces: with the SDK configured, a request is a server span carrying
its request id, status and GraphQL root fields."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from billing_gql import tracing
from billing_gql.testing import ApiClient

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    """The process's tracer provider (OpenTelemetry allows setting it once per process)."""
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        configured = TracerProvider()
        configured.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(configured)
    else:
        current.add_span_processor(SimpleSpanProcessor(EXPORTER))


async def test_a_graphql_request_is_a_server_span(api: ApiClient) -> None:
    assert tracing.ENABLED
    EXPORTER.clear()
    response = await api.http.post(
        "/graphql",
        content=json.dumps({"query": "{ plans { code } providers { name } }"}),
        headers={"content-type": "application/json", "x-request-id": "trace-me-1"},
    )
    assert response.status_code == 200
    spans = [s for s in EXPORTER.get_finished_spans() if s.name == "POST /graphql"]
    assert len(spans) == 1, [s.name for s in EXPORTER.get_finished_spans()]
    attributes = dict(spans[0].attributes or {})
    assert spans[0].kind == trace.SpanKind.SERVER
    assert attributes["billing_gql.request_id"] == "trace-me-1"
    assert attributes["http.response.status_code"] == 200
    assert attributes["graphql.operation.type"] == "query"
    assert list(attributes["graphql.fields"]) == ["plans", "providers"]  # type: ignore[arg-type]


async def test_a_webhook_span_is_named_by_its_route_not_its_provider(api: ApiClient) -> None:
    EXPORTER.clear()
    await api.post_webhook("some-provider-name", b"{}", {})
    names = [s.name for s in EXPORTER.get_finished_spans()]
    assert "POST /webhooks/{provider}" in names, names
