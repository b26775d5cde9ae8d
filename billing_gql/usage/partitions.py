"""The monthly partitions of ``usage_events``: created ahead, and dropped after retention.

``usage_events`` is partitioned by RANGE of ``ts``, one partition per UTC month named
``usage_events_pYYYY_MM``, plus ``usage_events_default`` for any timestamp without one (so an
insert never fails). Two worker sweeps keep it so (both idempotent and safe in several
processes at once: each change runs under one transaction-scoped advisory lock):

- :func:`create_partitions` makes the partitions of the clock's month and the
  :data:`MONTHS_AHEAD` next ones. Events already in the default partition for such a month
  (stored before it existed) are moved into the new partition in the same transaction.
- :func:`drop_expired_partitions`, with ``BILLING_GQL_USAGE_RETENTION_MONTHS`` set, drops the
  raw partitions that ended at least that many months before the clock's month, once their
  periods are invoiced: no subscription that is not ``CANCELED``/``EXPIRED`` has a current
  period starting before the partition's end (every period reaching into it has ended and was
  billed at its renewal), and no ``CANCELED``/``EXPIRED`` subscription's last period reaching
  into it ended (at its period end, or when it was ended sooner) within the retention window.
  The hourly rollups and the event ids stay: ``usage`` over whole hours of a dropped month
  still answers, and a late repeat of a dropped event is still a duplicate. Events in the
  default partition (timestamps in a month that had no partition when they were stored and
  never got one: far behind the clock) are not dropped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext

__all__ = [
    "MONTHS_AHEAD",
    "create_partitions",
    "drop_expired_partitions",
    "ensure_month",
    "month_start",
    "partition_name",
]

log = logging.getLogger(__name__)

MONTHS_AHEAD = 2
"""Months after the clock's month whose partitions exist ahead of their events."""

_LOCK = 0x6267_7570  # "bgup": serializes changes to usage_events' partitions
_TERMINAL = ["CANCELED", "EXPIRED"]

_PARTITIONS_SQL = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'usage_events'::regclass AND c.relname ~ '^usage_events_p[0-9]{4}_[0-9]{2}$'
"""

# A partition [start, end) may go once every period reaching into it is over and billed.
_OPEN_PERIOD_SQL = """
SELECT EXISTS (
    SELECT 1 FROM subscriptions s
    WHERE s.current_period_start < $1
      AND (s.status <> ALL($2::text[]) OR LEAST(s.current_period_end, s.ended_at) > $3))
"""


def month_start(moment: datetime, shift: int = 0) -> datetime:
    """The first instant of the UTC month of ``moment``, moved by ``shift`` months."""
    moment = moment.astimezone(UTC)
    index = moment.year * 12 + moment.month - 1 + shift
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(month: datetime) -> str:
    """``usage_events_pYYYY_MM`` for the month starting at ``month``."""
    return f"usage_events_p{month.year:04d}_{month.month:02d}"


async def ensure_month(conn: asyncpg.Connection, month: datetime) -> bool:
    """Create the partition of the month starting at ``month`` unless it exists; whether it
    was created. Its rows waiting in the default partition move into it."""
    name = partition_name(month)
    end = month_start(month, 1)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
            return False
        # Wait a little for the parent's lock, never long: the next sweep tries again.
        await conn.execute("SET LOCAL lock_timeout = '5s'")
        bounds = f"'{month.isoformat()}'::timestamptz AND ts < '{end.isoformat()}'::timestamptz"
        await conn.execute(
            f"CREATE TABLE {name} (LIKE usage_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        await conn.execute(
            f"WITH moved AS (DELETE FROM ONLY usage_events_default "  # noqa: S608
            f"WHERE ts >= {bounds} RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        )
        await conn.execute(
            f"ALTER TABLE usage_events ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
        )
    log.info("created usage partition %s", name)
    return True


async def create_partitions(runtime: ServiceContext, now: datetime) -> int:
    """The worker's sweep: the partitions of ``now``'s month and the next
    :data:`MONTHS_AHEAD` ones exist; returns how many it created."""
    created = 0
    async with runtime.db.acquire() as conn:
        existing = {r["relname"] for r in await conn.fetch(_PARTITIONS_SQL)}
        for shift in range(MONTHS_AHEAD + 1):
            month = month_start(now, shift)
            if partition_name(month) not in existing and await ensure_month(conn, month):
                created += 1
    return created


async def drop_expired_partitions(runtime: ServiceContext, now: datetime) -> int:
    """The worker's sweep: drop the raw partitions past retention whose periods are invoiced
    (see the module's docstring); returns how many it dropped. Off without a retention."""
    months = runtime.settings.billing.usage_retention_months
    if months is None:
        return 0
    cutoff = month_start(now, -months)
    dropped = 0
    async with runtime.db.acquire() as conn:
        names = sorted(r["relname"] for r in await conn.fetch(_PARTITIONS_SQL))
        for name in names:
            year, month = int(name[-7:-3]), int(name[-2:])
            start = datetime(year, month, 1, tzinfo=UTC)
            end = month_start(start, 1)
            if end > cutoff:
                break
            if await conn.fetchval(_OPEN_PERIOD_SQL, end, _TERMINAL, cutoff):
                break  # this one and every later one still hold an open period's events
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                await conn.execute("SET LOCAL lock_timeout = '5s'")
                if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
                    await conn.execute(f"DROP TABLE {name}")
                    dropped += 1
                    log.info("dropped usage partition %s (retention %d months)", name, months)
    return dropped
