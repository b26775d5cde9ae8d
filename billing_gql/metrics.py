"""Prometheus metrics of one process (``GET /metrics``), on prometheus_client.

The counters and histograms are module-level objects the layers that see the events update:
the GraphQL endpoint (operations), the webhook route (deliveries), the worker (jobs, sweeps)
and the outgoing webhook sender. Gauges of shared state — the job queue, the outgoing outbox,
the database pool — are read when scraped (:func:`scrape`). Labels are bounded: a GraphQL
operation is counted under its root fields (names from the schema, never the client's
``operationName``), a webhook under a configured provider's name (``unknown`` otherwise).

This module imports nothing of billing-gql above the settings, so any layer may use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE_LATEST",
    "REGISTRY",
    "count_graphql",
    "count_job_failure",
    "count_outgoing_delivery",
    "count_sweep_failure",
    "count_webhook",
    "scrape",
    "set_db_pool",
    "set_entitlement_cache",
    "set_queue",
]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

_PREFIX = "billing_gql"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

GRAPHQL_REQUESTS = Counter(
    f"{_PREFIX}_graphql_requests",
    "GraphQL operations executed, by root field, operation type and outcome "
    "(ok; error: the response carries errors; limited: refused with 429 by a rate limit).",
    ["field", "type", "outcome"],
    registry=REGISTRY,
)
GRAPHQL_LATENCY = Histogram(
    f"{_PREFIX}_graphql_request_duration_seconds",
    "Time to answer a GraphQL request, by root field.",
    ["field"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    f"{_PREFIX}_webhook_deliveries",
    "Provider webhook deliveries received, by provider and status (applied, ignored, failed, "
    "duplicate, bad_signature, forbidden_source, unreadable, store_failed, unknown_provider, "
    "rate_limited).",
    ["provider", "status"],
    registry=REGISTRY,
)
JOB_FAILURES = Counter(
    f"{_PREFIX}_job_failures",
    "Worker jobs that raised, by task.",
    ["task"],
    registry=REGISTRY,
)
SWEEP_FAILURES = Counter(
    f"{_PREFIX}_sweep_failures",
    "Worker sweeps (renewals, expiries, retries, …) that raised, by sweep.",
    ["sweep"],
    registry=REGISTRY,
)
OUTGOING_DELIVERIES = Counter(
    f"{_PREFIX}_outgoing_webhook_deliveries",
    "Attempts to deliver an event to a webhook endpoint, by result (delivered, failed: will be "
    "retried, abandoned: no attempts left).",
    ["result"],
    registry=REGISTRY,
)
QUEUE_JOBS = Gauge(
    f"{_PREFIX}_queue_jobs",
    "Jobs in the worker queue (shared by every process), by status.",
    ["status"],
    registry=REGISTRY,
)
OUTBOX_PENDING = Gauge(
    f"{_PREFIX}_outgoing_webhooks_pending",
    "Outgoing webhook messages waiting for (another) delivery attempt.",
    registry=REGISTRY,
)
DB_POOL = Gauge(
    f"{_PREFIX}_db_pool_connections",
    "Database connections of this process's pool, by state (in_use, idle, max).",
    ["state"],
    registry=REGISTRY,
)

QUEUE_STATUSES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted")
_WEBHOOK_STATUSES = frozenset(
    {
        "applied", "ignored", "failed", "received", "duplicate", "bad_signature",
        "forbidden_source", "unreadable", "store_failed", "unknown_provider", "rate_limited",
    }
)  # fmt: skip


def count_graphql(fields: Iterable[str], operation_type: str, outcome: str, seconds: float) -> None:
    """One GraphQL request: each of its root ``fields`` (``(invalid)`` when none ran);
    ``outcome`` is ``ok``, ``error`` or ``limited`` (a 429 of a rate limit, not a failure)."""
    names = list(fields) or ["(invalid)"]
    for name in names:
        GRAPHQL_REQUESTS.labels(name, operation_type, outcome).inc()
        GRAPHQL_LATENCY.labels(name).observe(seconds)


def count_webhook(provider: str | None, status: str) -> None:
    """One provider delivery; ``provider`` is ``None`` when it names no configured one."""
    WEBHOOK_DELIVERIES.labels(
        provider or "unknown", status if status in _WEBHOOK_STATUSES else "other"
    ).inc()


def count_job_failure(task: str) -> None:
    JOB_FAILURES.labels(task).inc()


def count_sweep_failure(sweep: str) -> None:
    SWEEP_FAILURES.labels(sweep).inc()


def count_outgoing_delivery(result: str) -> None:
    OUTGOING_DELIVERIES.labels(result).inc()


def set_queue(jobs: Mapping[str, int], outbox_pending: int) -> None:
    """The queue's jobs by status (statuses with none read 0) and the outbox's backlog."""
    for status in QUEUE_STATUSES:
        QUEUE_JOBS.labels(status).set(jobs.get(status, 0))
    OUTBOX_PENDING.set(outbox_pending)


def set_db_pool(in_use: int, idle: int, maximum: int) -> None:
    DB_POOL.labels("in_use").set(in_use)
    DB_POOL.labels("idle").set(idle)
    DB_POOL.labels("max").set(maximum)


# The entitlement cache's figures (``entitlements/cache.py``): (name, kind, help). The cache
# counts in plain integers on its hot path; a scrape copies them (:func:`set_entitlement_cache`).
ENTITLEMENT_CACHE_FIGURES = (
    ("entries", "gauge", "Entitlement answers held in memory."),
    ("size", "gauge", "Most entitlement answers held (BILLING_GQL_ENTITLEMENT_CACHE_SIZE)."),
    ("listener_connected", "gauge", "1 while the cache's LISTEN connection is up."),
    ("synced", "gauge", "Highest sync marker the cache's listener received."),
    ("hits", "counter", "Entitlement checks answered from memory."),
    ("misses", "counter", "Entitlement checks read from the database and stored."),
    ("bypassed", "counter", "Entitlement checks read while the listener was down."),
    ("refused", "counter", "Entitlement reads not stored: a notification came first."),
    ("invalidations", "counter", "Customer change notifications received by the cache."),
    ("clears", "counter", "Times the whole cache was dropped ('all' notified, a reconnect)."),
)  # fmt: skip


class _EntitlementCacheCollector(Collector):
    """Exposes the figures last copied from this process's entitlement cache (none while the
    cache is off)."""

    def __init__(self) -> None:
        self.figures: Mapping[str, int] | None = None

    def collect(self) -> Iterator[Metric]:
        figures = self.figures
        if figures is None:
            return
        for name, kind, help_text in ENTITLEMENT_CACHE_FIGURES:
            metric = f"{_PREFIX}_entitlement_cache_{name}"
            value = figures.get(name, 0)
            if kind == "counter":
                yield CounterMetricFamily(metric, help_text, value=value)
            else:
                yield GaugeMetricFamily(metric, help_text, value=value)


_ENTITLEMENT_CACHE = _EntitlementCacheCollector()
REGISTRY.register(_ENTITLEMENT_CACHE)


def set_entitlement_cache(figures: Mapping[str, int] | None) -> None:
    """The entitlement cache's figures (names of :data:`ENTITLEMENT_CACHE_FIGURES`), or
    ``None`` when the cache is off (its series are then left out)."""
    _ENTITLEMENT_CACHE.figures = dict(figures) if figures is not None else None


def scrape() -> bytes:
    """The exposition text of every metric (call the ``set_*`` functions first)."""
    return generate_latest(REGISTRY)
