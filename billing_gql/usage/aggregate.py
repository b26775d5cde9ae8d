"""Aggregating usage: a meter's value for a customer over a period, and the default period.

:func:`aggregate` is the one function every consumer uses (the ``usage`` query, invoice
previews, metered entitlements, threshold checks): all five aggregations for any number of
meters in one query.

Each window ``[start, end)`` is read in three parts: the whole UTC hours inside it from the
hourly rollups (``usage_rollups``, appended by the ingest statement in the same transaction as
the events; an hour may have several rows until the worker merges them, and they add up), and
the raw events of the partial hours at its two edges through the ``(customer_id, meter_id, ts)``
index of the partitioned ``usage_events``. A window inside one hour reads only raw events. The
answers are exactly those of reading every raw event:

- COUNT and SUM add the rollups' counts and sums to the edges' (numeric sums are exact);
- MAX takes the greatest of the rollups' maxima and the edges';
- LATEST takes the greatest ``(ts, seq)`` among the upper edge's latest event, the latest
  rollup hour's latest event (each rollup row keeps the greatest ``(ts, seq)`` of its events
  and that event's value) and the lower edge's latest event: the same tie-break (timestamp,
  then ingestion order) as ordering the raw events;
- UNIQUE_COUNT is not additive across hours, so it counts distinct values over the raw events
  of the whole window (exact; its cost grows with the window's events).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    "whole_hours",
]

LIVE_STATUSES = ("TRIALING", "ACTIVE", "PAST_DUE")
"""Subscription statuses whose current period is the default usage period."""

_ZERO = Decimal(0)
_HOUR = timedelta(hours=1)

# One round trip for any number of (customer, meter, window) items; $5/$6 are each window's
# whole hours [hours_from, hours_to) (empty, at the window's end, when it holds none). The raw
# edges are [start_at, hours_from) and [hours_to, end_at).
# $7/$8 bound every item's window ([the earliest start, the latest end)): plain parameters, so
# PostgreSQL prunes the partitions outside them when it plans the statement (the per-item
# bounds come from the arrays and prune only at run time, after planning every partition).
_BOUNDS = "AND e.ts >= $7 AND e.ts < $8"
_EDGE = (
    "e.customer_id = q.customer_id AND e.meter_id = q.meter_id "
    "AND e.ts >= q.{lo} AND e.ts < q.{hi} " + _BOUNDS
)
_LOWER = _EDGE.format(lo="start_at", hi="hours_from")
_UPPER = _EDGE.format(lo="hours_to", hi="end_at")
_HOURS = (
    "u.customer_id = q.customer_id AND u.meter_id = q.meter_id "
    "AND u.hour >= q.hours_from AND u.hour < q.hours_to"
)
_AGGREGATE_SQL = f"""
WITH q AS (
    SELECT q.i, q.customer_id, q.meter_id, q.start_at, q.end_at, q.hours_from, q.hours_to,
           m.aggregation, m.property
    FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[],
                $5::timestamptz[], $6::timestamptz[])
         WITH ORDINALITY AS q(customer_id, meter_id, start_at, end_at, hours_from, hours_to, i)
    JOIN meters m ON m.id = q.meter_id
)
SELECT q.i, CASE q.aggregation
    WHEN 'COUNT' THEN COALESCE(r.events, 0) + x.events
    WHEN 'SUM' THEN COALESCE(r.total, 0) + COALESCE(x.total, 0)
    ELSE COALESCE(GREATEST(r.peak, x.peak), 0)
END AS value
FROM q
CROSS JOIN LATERAL (
    SELECT sum(u.events) AS events, sum(u.total) AS total, max(u.peak) AS peak
    FROM usage_rollups u WHERE {_HOURS}
) r
CROSS JOIN LATERAL (
    SELECT count(*)::numeric AS events, sum(v.value) AS total, max(v.value) AS peak
    FROM (SELECT e.value FROM usage_events e WHERE {_LOWER}
          UNION ALL
          SELECT e.value FROM usage_events e WHERE {_UPPER}) v
) x
WHERE q.aggregation IN ('COUNT', 'SUM', 'MAX')
UNION ALL
SELECT q.i, (
    SELECT count(DISTINCT CASE WHEN q.property IS NULL THEN to_jsonb(e.value)
                               ELSE e.properties -> q.property END)::numeric
    FROM usage_events e
    WHERE e.customer_id = q.customer_id AND e.meter_id = q.meter_id
      AND e.ts >= q.start_at AND e.ts < q.end_at {_BOUNDS})
FROM q
WHERE q.aggregation = 'UNIQUE_COUNT'
UNION ALL
SELECT q.i, COALESCE((
    SELECT c.value FROM (
        (SELECT e.ts, e.seq, e.value FROM usage_events e WHERE {_UPPER}
         ORDER BY e.ts DESC, e.seq DESC LIMIT 1)
        UNION ALL
        (SELECT u.latest_ts, u.latest_seq, u.latest_value FROM usage_rollups u WHERE {_HOURS}
         ORDER BY u.hour DESC, u.latest_ts DESC, u.latest_seq DESC LIMIT 1)
        UNION ALL
        (SELECT e.ts, e.seq, e.value FROM usage_events e WHERE {_LOWER}
         ORDER BY e.ts DESC, e.seq DESC LIMIT 1)
    ) c ORDER BY c.ts DESC, c.seq DESC LIMIT 1), 0)
FROM q
WHERE q.aggregation = 'LATEST'
"""  # noqa: S608


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC (a naive one is taken as UTC, as asyncpg stores it)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole UTC hours ``[first, last)`` inside ``[start, end)``; ``(end, end)`` when there
    are none (then only the raw events of ``[start, end)`` are read)."""
    start, end = _utc(start), _utc(end)
    floor = start.replace(minute=0, second=0, microsecond=0)
    try:
        first = floor if floor == start else floor + _HOUR
    except OverflowError:  # a window starting in the last hour datetime can hold
        return end, end
    last = end.replace(minute=0, second=0, microsecond=0)
    return (first, last) if first < last else (end, end)


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
    hours = [whole_hours(i.start, i.end) for i in items]
    rows = await conn.fetch(
        _AGGREGATE_SQL,
        [i.customer_id for i in items],
        [i.meter_id for i in items],
        [i.start for i in items],
        [i.end for i in items],
        [first for first, _ in hours],
        [last for _, last in hours],
        min(i.start for i in items),
        max(i.end for i in items),
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
