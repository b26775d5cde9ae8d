"""Aggregating usage: a meter's value for a customer over a period, and the default period.

:func:`aggregate` is the one function every consumer uses (the ``usage`` query, invoice
previews, metered entitlements, threshold checks): all five aggregations for any number of
meters in one query over the ``(customer_id, meter_id, ts)`` index.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from billing_gql.usage.models import Meter, Period

__all__ = ["LIVE_STATUSES", "aggregate", "calendar_month", "current_period"]

LIVE_STATUSES = ("TRIALING", "ACTIVE", "PAST_DUE")
"""Subscription statuses whose current period is the default usage period."""

_ZERO = Decimal(0)

# One round trip for every meter. Each aggregate has a FILTER on the meter's own aggregation, so
# a COUNT meter never feeds the DISTINCT sort, and LATEST reads one row per meter from the end
# of the index range (ties on the timestamp: the later ingested, by ``seq``).
_AGGREGATE_SQL = """
WITH m AS (
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[]) AS m(id, aggregation, property)
)
SELECT m.id, a.value
FROM m CROSS JOIN LATERAL (
    SELECT CASE m.aggregation
        WHEN 'COUNT' THEN count(*)::numeric
        WHEN 'SUM' THEN COALESCE(sum(e.value) FILTER (WHERE m.aggregation = 'SUM'), 0)
        WHEN 'MAX' THEN COALESCE(max(e.value) FILTER (WHERE m.aggregation = 'MAX'), 0)
        ELSE count(DISTINCT CASE WHEN m.property IS NULL THEN to_jsonb(e.value)
                                 ELSE e.properties -> m.property END)
             FILTER (WHERE m.aggregation = 'UNIQUE_COUNT')::numeric
    END AS value
    FROM usage_events e
    WHERE e.customer_id = $1 AND e.meter_id = m.id AND e.ts >= $5 AND e.ts < $6
) a
WHERE m.aggregation <> 'LATEST'
UNION ALL
SELECT m.id, COALESCE((
    SELECT e.value FROM usage_events e
    WHERE e.customer_id = $1 AND e.meter_id = m.id AND e.ts >= $5 AND e.ts < $6
    ORDER BY e.ts DESC, e.seq DESC LIMIT 1), 0)
FROM m
WHERE m.aggregation = 'LATEST'
"""


async def aggregate(
    conn: asyncpg.Connection | asyncpg.Pool,
    customer_id: UUID,
    meters: Sequence[Meter],
    start: datetime,
    end: datetime,
) -> dict[UUID, Decimal]:
    """Each meter's aggregate for ``customer_id`` over events with ``start <= ts < end``.

    COUNT counts events; SUM, MAX and LATEST use the number stored at ingestion (the event's
    ``value``, or its ``properties[property]``); UNIQUE_COUNT counts distinct values of
    ``properties[property]`` of any JSON type (``value`` without a property; events lacking
    the property are not counted). A meter without events in the period is 0.
    """
    if not meters:
        return {}
    rows = await conn.fetch(
        _AGGREGATE_SQL,
        customer_id,
        [m.id for m in meters],
        [m.aggregation for m in meters],
        [m.property for m in meters],
        start,
        end,
    )
    found: dict[UUID, Decimal] = {r["id"]: r["value"] for r in rows}
    return {m.id: found.get(m.id, _ZERO) for m in meters}


def calendar_month(now: datetime) -> Period:
    """The UTC calendar month containing ``now``."""
    now = now.astimezone(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        end = start.replace(year=start.year + 1, month=1)
    else:
        end = start.replace(month=start.month + 1)
    return Period(start, end)


async def current_period(
    conn: asyncpg.Connection | asyncpg.Pool,
    customer_id: UUID | None,
    now: datetime,
    meter_id: UUID | None = None,
) -> Period:
    """The default usage period: the customer's live subscription's current period, else the
    UTC calendar month containing ``now``.

    With several live subscriptions, one whose plan charges ``meter_id`` wins, then the one
    whose period started last.
    """
    if customer_id is not None:
        row = await conn.fetchrow(
            "SELECT s.current_period_start, s.current_period_end FROM subscriptions s "
            "WHERE s.customer_id = $1 AND s.status = ANY($2::text[]) "
            "AND s.current_period_start IS NOT NULL AND s.current_period_end IS NOT NULL "
            "ORDER BY EXISTS (SELECT 1 FROM usage_charges c "
            "                 WHERE c.plan_id = s.plan_id AND c.meter_id = $3) DESC, "
            "s.current_period_start DESC, s.created_at DESC LIMIT 1",
            customer_id,
            list(LIVE_STATUSES),
            meter_id,
        )
        if row is not None:
            return Period(row["current_period_start"], row["current_period_end"])
    return calendar_month(now)
