"""Merging the hourly usage rollups: the worker keeps one row per (customer, meter, hour).

The ingest statement appends a rollup row for each (customer, meter, UTC hour) its batch
touches (:data:`billing_gql.metering.insert.ROLLUP_SQL`): cheap, and concurrent batches never
wait on each other's rollup rows. Readers add up an hour's rows, so any number of rows per hour
answers exactly; this sweep merges them so that reads stay short however many batches a busy
customer sends.

A pass looks at the rows appended since the last one (ids in ``(compacted_to, horizon]`` of
``usage_rollup_state``, found through the BRIN index on ``id``) and, for each hour they touch
that has more than one row, replaces all of that hour's rows by one in a single statement: count
and sum added, max of the maxima, and the latest ``(ts, seq, value)`` of them (MVCC: a reader
sees the rows before or after, never a mix; rows appended meanwhile are not deleted and are
merged by a later pass). ``horizon`` is the id sequence's value at the previous pass: a batch
takes its ids while it runs, so by the next pass (a worker tick later) every row up to it has
committed and none is passed over. Passes run one at a time (an advisory lock).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext

__all__ = ["MAX_ROWS", "compact", "compact_rollups"]

MAX_ROWS = 50_000
"""Rollup rows looked at in one pass (the next pass goes on)."""

_LOCK = 0x6267_7572  # "bgur": one compaction at a time

_COMPACT_SQL = """
WITH state AS (
    SELECT COALESCE(max(compacted_to), 0) AS compacted_to, COALESCE(max(horizon), 0) AS horizon
    FROM usage_rollup_state
),
fresh AS (
    SELECT r.id, r.customer_id, r.meter_id, r.hour FROM usage_rollups r, state
    WHERE r.id > state.compacted_to AND r.id <= state.horizon ORDER BY r.id LIMIT $1
),
hours AS (
    SELECT DISTINCT f.customer_id, f.meter_id, f.hour FROM fresh f
    WHERE EXISTS (SELECT 1 FROM usage_rollups o
                  WHERE o.customer_id = f.customer_id AND o.meter_id = f.meter_id
                    AND o.hour = f.hour AND o.id <> f.id)
),
gone AS (
    DELETE FROM usage_rollups r USING hours h
    WHERE r.customer_id = h.customer_id AND r.meter_id = h.meter_id AND r.hour = h.hour
    RETURNING r.*
),
merged AS (
    INSERT INTO usage_rollups (customer_id, meter_id, hour, events, total, peak, latest_ts,
                               latest_seq, latest_value)
    SELECT customer_id, meter_id, hour, sum(events), sum(total), max(peak), max(latest_ts),
           (array_agg(latest_seq ORDER BY latest_ts DESC, latest_seq DESC))[1],
           (array_agg(latest_value ORDER BY latest_ts DESC, latest_seq DESC))[1]
    FROM gone GROUP BY customer_id, meter_id, hour
),
moved AS (
    -- A full window moves on to its last row; a partial one means the window is done: the
    -- next one ends at the sequence's value now. (The row is made again if it was lost.)
    INSERT INTO usage_rollup_state AS s (id, compacted_to, horizon)
    SELECT 1,
           CASE WHEN (SELECT count(*) FROM fresh) >= $1
                THEN (SELECT max(id) FROM fresh) ELSE state.horizon END,
           CASE WHEN (SELECT count(*) FROM fresh) >= $1
                THEN state.horizon ELSE (SELECT last_value FROM usage_rollups_id_seq) END
    FROM state
    ON CONFLICT (id) DO UPDATE SET compacted_to = excluded.compacted_to,
                                   horizon = excluded.horizon
)
SELECT count(*) FROM hours
"""


async def compact(conn: asyncpg.Connection, max_rows: int = MAX_ROWS) -> int:
    """One pass (see the module's docstring); the number of hours merged. Returns 0 at once
    when another pass is running."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK):
            return 0
        return int(await conn.fetchval(_COMPACT_SQL, max_rows))


async def compact_rollups(runtime: ServiceContext, now: datetime) -> int:
    """The worker's sweep: one :func:`compact` pass; returns how many hours it merged."""
    del now  # rollups are merged whatever the clock says
    async with runtime.db.acquire() as conn:
        return await compact(conn)
