"""Optional OpenTelemetry traces: used when the ``opentelemetry-api`` package is installed,
a no-op otherwise (billing-gql does not depend on it).

Spans go to the process's global tracer provider: install ``opentelemetry-sdk`` and an
exporter, and configure them as OpenTelemetry documents (``opentelemetry-instrument
billing-gql serve`` with ``OTEL_*`` variables, or your own start-up code). Without a
configured provider the API's spans cost next to nothing. Spans: one per HTTP request
(``POST /graphql``, ``POST /webhooks/{provider}``, …) with the request id and the status, the
GraphQL root fields and operation type on it, and one per worker tick (with the id of the
request that asked for it).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["ENABLED", "annotate", "span"]

ENABLED = importlib.util.find_spec("opentelemetry") is not None
_tracer: Any = None


def _get_tracer() -> Any:
    global _tracer  # noqa: PLW0603 (one tracer per process, made on first use)
    if _tracer is None:
        from opentelemetry import trace

        _tracer = trace.get_tracer("billing_gql")
    return _tracer


@contextmanager
def span(
    name: str, attributes: dict[str, Any] | None = None, *, server: bool = False
) -> Iterator[Any]:
    """A span around the block (``None`` when OpenTelemetry is not installed)."""
    if not ENABLED:
        yield None
        return
    from opentelemetry.trace import SpanKind

    kind = SpanKind.SERVER if server else SpanKind.INTERNAL
    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    with _get_tracer().start_as_current_span(name, kind=kind, attributes=clean) as current:
        yield current


def annotate(**attributes: Any) -> None:
    """Set attributes on the current span, if any."""
    if not ENABLED:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(key, value)
