"""``usage.threshold_crossed``: a metered entitlement reaching 80% or 100% of its limit.

Checked right after ``recordUsage`` stores events for a meter that is also a limited feature,
for the customers those events belong to. The check compares the entitlement's current state
(``used`` over the current period, against the summed limit) with the thresholds, and records
each crossing in ``usage_thresholds`` under a unique (customer, feature, period, threshold)
key: only the statement that inserts the row emits the event, so each threshold is announced
once per period even when concurrent batches cross it together. Because the check is about the
current state, a crossing missed by a failed check is caught by the customer's next batch.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

import asyncpg

from billing_gql.entitlements.service import entitlements
from billing_gql.money import format_decimal
from billing_gql.plugins.types import DomainEvent

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext

__all__ = ["EVENT_TYPE", "THRESHOLDS", "check_thresholds"]

log = logging.getLogger(__name__)

EVENT_TYPE = "usage.threshold_crossed"
THRESHOLDS = (80, 100)
"""Percentages of a limit that are announced."""

_RECORD_SQL = """
INSERT INTO usage_thresholds
    (id, customer_id, feature, period_start, threshold, limit_value, used, crossed_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::int[],
                     $6::numeric[], $7::numeric[], $8::timestamptz[])
ON CONFLICT (customer_id, feature, period_start, threshold) DO NOTHING
RETURNING id, customer_id, feature, period_start, threshold, limit_value, used
"""


async def check_thresholds(
    runtime: ServiceContext, pairs: Iterable[tuple[UUID, str]]
) -> list[DomainEvent]:
    """Record and emit the thresholds that (customer, feature) pairs have newly crossed.

    :param pairs: customers and the metered features (meter codes) they just used.
    :returns: the events emitted.
    """
    wanted: dict[UUID, set[str]] = {}
    for customer_id, feature in pairs:
        wanted.setdefault(customer_id, set()).add(feature)
    if not wanted:
        return []
    now = await runtime.clock.now()
    db = runtime.db
    current = await entitlements(db.pool, list(wanted), now=runtime.clock.now)
    limited = [
        (customer_id, e)
        for customer_id, found in current.items()
        for e in found
        if e.feature in wanted[customer_id] and e.limit is not None and e.limit > 0
    ]
    candidates = []
    for customer_id, e in limited:
        # A limited metered feature that is granted always has the period its used covers.
        assert e.limit is not None and e.period is not None
        period = e.period
        for threshold in THRESHOLDS:
            if e.used * 100 >= e.limit * threshold:
                candidates.append((customer_id, e.feature, period, threshold, e.limit, e.used))
    if not candidates:
        return []
    crossed = await db.fetch(
        _RECORD_SQL,
        [uuid.uuid4() for _ in candidates],
        [c[0] for c in candidates],
        [c[1] for c in candidates],
        [c[2].start for c in candidates],
        [c[3] for c in candidates],
        [c[4] for c in candidates],
        [c[5] for c in candidates],
        [now] * len(candidates),
    )
    if not crossed:
        return []
    external = {
        r["id"]: r["external_id"]
        for r in await db.fetch(
            "SELECT id, external_id FROM customers WHERE id = ANY($1::uuid[])",
            list({r["customer_id"] for r in crossed}),
        )
    }
    ends = {(c[0], c[1]): c[2].end for c in candidates}
    events = [
        _event(r, external.get(r["customer_id"]), ends[(r["customer_id"], r["feature"])], now)
        for r in crossed
    ]
    for event in events:
        await runtime.emit(event)
    return events


def _event(
    row: asyncpg.Record, external_id: str | None, period_end: datetime, now: datetime
) -> DomainEvent:
    return DomainEvent(
        id=str(row["id"]),
        type=EVENT_TYPE,
        occurred_at=now,
        data={
            "customerId": str(row["customer_id"]),
            "externalCustomerId": external_id,
            "feature": row["feature"],
            "meter": row["feature"],
            "threshold": row["threshold"],
            "limit": format_decimal(row["limit_value"]),
            "used": format_decimal(row["used"]),
            "periodStart": row["period_start"].isoformat(),
            "periodEnd": period_end.isoformat(),
        },
    )
