"""Forwarding usage to providers that bill it (Polar events, Stripe meter events).

``recordUsage`` queues each new event in ``usage_outbox`` — one row per provider that both has
a reference on the event's meter and implements ``Provider.report_usage`` — in the same
statement that stores the event. :func:`forward_usage` drains the queue: it leases a batch per
provider, hands it to the plugin as :class:`~billing_gql.plugins.types.UsageRecord` objects,
then marks each row accepted or rejected; when the provider cannot be reached the batch is
retried with exponential backoff until it is accepted. Providers dedupe on
``UsageRecord.event_id`` (Polar ``external_id``, Stripe ``identifier``), so a retry after a
lost answer never bills twice.

The worker runs :func:`forward_usage` as a periodic sweep with the clock's now.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from billing_gql.errors import ProviderError
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import (
    CustomerInfo,
    ProviderCapability,
    UsageRecord,
    UsageReportResult,
)
from billing_gql.routing import log_failure, redact
from billing_gql.usage.meters import load_meters

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "LEASE",
    "backoff",
    "forward_usage",
    "next_forward_attempt",
]

log = logging.getLogger(__name__)

BATCH_SIZE = 500
"""Records per ``report_usage`` call."""
MAX_BATCHES = 20
"""Batches per provider per sweep, so one sweep stays short; the next sweep continues."""
LEASE = timedelta(minutes=5)
"""How long a claimed batch is hidden from other sweeps while its call is in flight."""
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)

_CLAIM_SQL = """
WITH picked AS (
    SELECT id FROM usage_outbox
    WHERE provider = $1 AND status = 'pending' AND next_attempt_at <= $2
    ORDER BY next_attempt_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE usage_outbox o SET attempts = o.attempts + 1, next_attempt_at = $4
FROM picked WHERE o.id = picked.id
RETURNING o.id, o.event_id, o.attempts, o.customer_id, o.meter_id, o.event_ts
"""

_EVENTS_SQL = """
SELECT e.event_id, e.meter_id, e.ts, e.value, e.properties,
       c.id AS customer_id, c.external_id, c.email, c.name, c.country,
       a.provider_customer_id
FROM unnest($1::text[], $3::uuid[], $4::uuid[], $5::timestamptz[])
     AS o(event_id, customer_id, meter_id, ts)
JOIN usage_events e ON e.customer_id = o.customer_id AND e.meter_id = o.meter_id
     AND e.ts = o.ts AND e.event_id = o.event_id
JOIN customers c ON c.id = e.customer_id
LEFT JOIN customer_provider_accounts a ON a.customer_id = c.id AND a.provider = $2
"""


def backoff(attempts: int) -> timedelta:
    """The wait before retry number ``attempts`` (1, 2, …): 30 s doubling, at most 1 h."""
    return min(BACKOFF_BASE * (1 << min(max(0, attempts - 1), 20)), BACKOFF_MAX)


async def forward_usage(runtime: ServiceContext, now: datetime) -> int:
    """Send due queued usage to every configured provider that takes usage (a worker sweep).

    :param now: the clock's now; rows are due when their ``next_attempt_at`` is not after it.
    :returns: the number of queued events settled in this sweep, accepted or refused for good
        (events left for a retry are not counted).
    """
    settled = 0
    for provider in runtime.providers.configured():
        if not provider.supports(ProviderCapability.USAGE):
            continue
        for _ in range(MAX_BATCHES):
            claimed = await runtime.db.fetch(
                _CLAIM_SQL, provider.name, now, BATCH_SIZE, now + LEASE
            )
            if not claimed:
                break
            settled += await _send(runtime, provider, claimed, now)
            if len(claimed) < BATCH_SIZE:
                break
    return settled


async def next_forward_attempt(runtime: ServiceContext, now: datetime) -> datetime | None:
    """When queued usage next falls due after ``now`` (a retry), if any."""
    return await runtime.db.fetch_time(
        "SELECT min(next_attempt_at) FROM usage_outbox "
        "WHERE status = 'pending' AND next_attempt_at > $1",
        now,
    )


async def _send(
    runtime: ServiceContext, provider: Provider, claimed: Sequence[Any], now: datetime
) -> int:
    by_event = {r["event_id"]: r for r in claimed}
    # Each outbox row carries its event's (customer, meter, ts): the partitioned index finds it.
    queued = list(by_event.values())
    rows = await runtime.db.fetch(
        _EVENTS_SQL,
        [r["event_id"] for r in queued],
        provider.name,
        [r["customer_id"] for r in queued],
        [r["meter_id"] for r in queued],
        [r["event_ts"] for r in queued],
    )
    meter_ids = {r["meter_id"] for r in rows}
    meters = {m.id: m for m in await load_meters(runtime.db.pool, ids=list(meter_ids))}
    records: list[UsageRecord] = []
    rejected: dict[str, str] = {}
    for row in rows:
        meter = meters.get(row["meter_id"])
        name = meter.provider_ref(provider.name) if meter else None
        if meter is None or name is None:
            rejected[row["event_id"]] = f"the meter has no reference at {provider.name}"
            continue
        records.append(
            UsageRecord(
                event_id=row["event_id"],
                meter_code=meter.code,
                provider_event_name=name,
                customer=CustomerInfo(
                    id=str(row["customer_id"]),
                    external_id=row["external_id"],
                    email=row["email"],
                    name=row["name"],
                    country=row["country"],
                    provider_customer_id=row["provider_customer_id"],
                ),
                timestamp=row["ts"],
                value=row["value"],
                properties=row["properties"] or {},
            )
        )
    found = {r["event_id"] for r in rows}
    for event_id in by_event.keys() - found:
        rejected[event_id] = "the usage event no longer exists"

    result = UsageReportResult(accepted=0)
    if records:
        try:
            result = await provider.report_usage(records)
        except ProviderError as exc:
            # ProviderUnavailable (unreachable, 429/5xx) and refusals of the whole batch (a bad
            # key, say) are retried with backoff: the operator can fix a refusal's cause.
            await _retry_later(runtime, claimed, now, redact(provider, exc.message), skip=rejected)
            await _settle(runtime, claimed, rejected, now, only=rejected.keys())
            log.warning(
                "forwarding %d usage records to %s failed (%s); retrying later",
                len(records),
                provider.name,
                exc.code,
            )
            return len(rejected)
        except Exception as exc:
            log_failure(
                log, provider, exc, "forwarding usage to %s failed; retrying later", provider.name
            )
            await _retry_later(runtime, claimed, now, "the provider plugin failed", skip=rejected)
            await _settle(runtime, claimed, rejected, now, only=rejected.keys())
            return len(rejected)
    refused = {**rejected, **{str(k): str(v) for k, v in result.rejected.items()}}
    await _settle(runtime, claimed, refused, now, only=None)
    return len(claimed)


async def _retry_later(
    runtime: ServiceContext,
    claimed: Sequence[Any],
    now: datetime,
    error: str,
    *,
    skip: Any,
) -> None:
    ids = [r["id"] for r in claimed if r["event_id"] not in skip]
    retry_at = [now + backoff(r["attempts"]) for r in claimed if r["event_id"] not in skip]
    await runtime.db.execute(
        "UPDATE usage_outbox o SET next_attempt_at = t.at, last_error = $3 "
        "FROM unnest($1::bigint[], $2::timestamptz[]) AS t(id, at) WHERE o.id = t.id",
        ids,
        retry_at,
        error[:1000],
    )


async def _settle(
    runtime: ServiceContext,
    claimed: Sequence[Any],
    rejected: dict[str, str],
    now: datetime,
    *,
    only: Any,
) -> None:
    """Mark rows accepted, or rejected with the reason (``only``: just these event ids)."""
    rows = [r for r in claimed if only is None or r["event_id"] in only]
    if not rows:
        return
    await runtime.db.execute(
        "UPDATE usage_outbox o SET status = t.status, last_error = t.error, completed_at = $4 "
        "FROM unnest($1::bigint[], $2::text[], $3::text[]) AS t(id, status, error) "
        "WHERE o.id = t.id",
        [r["id"] for r in rows],
        ["rejected" if r["event_id"] in rejected else "accepted" for r in rows],
        [rejected[r["event_id"]][:1000] if r["event_id"] in rejected else None for r in rows],
        now,
    )
