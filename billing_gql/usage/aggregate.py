"""Aggregating usage: a meter's value for a customer over a period, and the default period.

:func:`aggregate` is the one function every consumer uses (the ``usage`` query, invoice
previews, metered entitlements, threshold checks): all five aggregations for any number of
meters in one query over the ``(customer_id, meter_id, ts)`` index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from billing_gql.core.usage import Meter, Period

__all__ = [
    "LIVE_STATUSES",
    "UsageItem",
    "aggregate",
    "aggregate_many",
    "calendar_month",
    "current_period",
]

LIVE_STATUSES = ("TRIALING", "ACTIVE", "PAST_DUE")
"""Subscription statuses whose current period is the default usage period."""

_ZERO = Decimal(0)

# One round trip for any number of (customer, meter, period) items. Each aggregate has a FILTER
# on the meter's own aggregation, so a COUNT meter never feeds the DISTINCT sort, and LATEST
# reads one row per item from the end of its index range (timestamp ties: the later ingested,
# by ``seq``). Every item reads the (customer_id, meter_id, ts) index.
_AGGREGATE_SQL = """
WITH q AS (
    SELECT q.i, q.customer_id, q.meter_id, q.start_at, q.end_at, m.aggregation, m.property
    FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[])
         WITH ORDINALITY AS q(customer_id, meter_id, start_at, end_at, i)
    JOIN meters m ON m.id = q.meter_id
)
SELECT q.i, a.value
FROM q CROSS JOIN LATERAL (
    SELECT CASE q.aggregation
        WHEN 'COUNT' THEN count(*)::numeric
        WHEN 'SUM' THEN COALESCE(sum(e.value) FILTER (WHERE q.aggregation = 'SUM'), 0)
        WHEN 'MAX' THEN COALESCE(max(e.value) FILTER (WHERE q.aggregation = 'MAX'), 0)
        ELSE count(DISTINCT CASE WHEN q.property IS NULL THEN to_jsonb(e.value)
                                 ELSE e.properties -> q.property END)
             FILTER (WHERE q.aggregation = 'UNIQUE_COUNT')::numeric
    END AS value
    FROM usage_events e
    WHERE e.customer_id = q.customer_id AND e.meter_id = q.meter_id
      AND e.ts >= q.start_at AND e.ts < q.end_at
) a
WHERE q.aggregation <> 'LATEST'
UNION ALL
SELECT q.i, COALESCE((
    SELECT e.value FROM usage_events e
    WHERE e.customer_id = q.customer_id AND e.meter_id = q.meter_id
      AND e.ts >= q.start_at AND e.ts < q.end_at
    ORDER BY e.ts DESC, e.seq DESC LIMIT 1), 0)
FROM q
WHERE q.aggregation = 'LATEST'
"""


@dataclass(frozen=True)
class UsageItem:
    """One aggregate to compute: a customer's meter over ``start <= ts < end``."""

    customer_id: UUID
    meter_id: UUID
    start: datetime
    end: datetime


async def aggregate_many(
    conn: asyncpg.Connection | asyncpg.Pool, items: Sequence[UsageItem]
) -> list[Decimal]:
    """Each item's aggregate, in order, in one statement (0 for an unknown meter).

    COUNT counts events; SUM, MAX and LATEST use the number stored at ingestion (the event's
    ``value``, or its ``properties[property]``); UNIQUE_COUNT counts distinct values of
    ``properties[property]`` of any JSON type (``value`` without a property; events lacking
    the property are not counted). No events in the period: 0.
    """
    if not items:
        return []
    rows = await conn.fetch(
        _AGGREGATE_SQL,
        [i.customer_id for i in items],
        [i.meter_id for i in items],
        [i.start for i in items],
        [i.end for i in items],
    )
    found: dict[int, Decimal] = {r["i"]: r["value"] for r in rows}
    return [found.get(position, _ZERO) for position in range(1, len(items) + 1)]


async def aggregate(
    conn: asyncpg.Connection | asyncpg.Pool,
    customer_id: UUID,
    meters: Sequence[Meter],
    start: datetime,
    end: datetime,
) -> dict[UUID, Decimal]:
    """Each meter's aggregate for ``customer_id`` over events with ``start <= ts < end``
    (see :func:`aggregate_many`), keyed by meter id."""
    values = await aggregate_many(conn, [UsageItem(customer_id, m.id, start, end) for m in meters])
    return {m.id: value for m, value in zip(meters, values, strict=True)}


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
