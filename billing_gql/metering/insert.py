"""Storing a validated usage batch: the insert, dedupe and rollup path of ``recordUsage``.

One statement per batch, so one transaction: it inserts the events into the partitioned
``usage_events``, their ids into ``usage_event_ids`` and appends their hourly rollups to
``usage_rollups`` (one row per customer, meter and UTC hour the batch touches: count, sum, max
and the latest ``(ts, seq, value)``). The primary key of ``usage_event_ids`` makes a repeat —
in the same batch, a later one or a concurrent one — a duplicate that is never stored twice (a
partitioned table cannot hold a unique key without its partition key ``ts``, and an event id
must be unique whatever its timestamp): a batch that repeats no id within itself is first
inserted plainly (cheaper for PostgreSQL), and if the key refuses it the statement stores
nothing and the batch is inserted again with ``ON CONFLICT (event_id) DO NOTHING`` on the ids,
which stores only the events whose id it inserted and counts every other as a duplicate. The
same statement queues the new events for providers that bill usage (the outbox, see
:mod:`billing_gql.usage.forwarding`) and, for an audited ``recordUsage``, writes its audit row
(:func:`billing_gql.db.database.pending_hook`).
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from billing_gql.db.database import pending_hook

__all__ = ["INSERT_IDEMPOTENT_SQL", "INSERT_NEW_SQL", "ROLLUP_SQL", "insert_batch"]

log = logging.getLogger(__name__)

_DEADLOCK_RETRIES = 5

# The batch travels as one JSON document ``[[event_id, customer#, meter#, unix seconds,
# microseconds, value, properties], …]`` with customers and meters as 1-based positions in two
# small uuid arrays: encoding it is one C-level json.dumps, where per-element array parameters
# cost asyncpg ~4 us per event in Python (measured; the server's CPU is the scarce resource on
# this path). Timestamps as integer (seconds, microseconds) are exact and cheaper to build and
# to convert than ISO text. Rows are inserted in document order, so ``seq`` follows the batch.
_COLUMNS = (
    "x->>0, ($2::uuid[])[(x->>1)::int], ($3::uuid[])[(x->>2)::int], "
    "to_timestamp((x->>3)::bigint) + (x->>4)::int * interval '1 microsecond', "
    "(x->>5)::numeric, NULLIF(x->6, 'null'::jsonb), $4 "
)
_INSERT = (
    "INSERT INTO usage_events (event_id, customer_id, meter_id, ts, value, properties, "
    "ingested_at) "
)
_RETURNING = "RETURNING event_id, customer_id, meter_id, ts, value, seq"

HOUR = "date_bin('1 hour', ts, timestamptz '2000-01-01 00:00+00')"
"""The UTC hour of ``ts`` (independent of the session's time zone)."""

# The hourly rollups of the inserted events (``ins``): one new row per (customer, meter, hour)
# the batch touches, appended (readers add an hour's rows up; the worker merges them, see
# ``usage.rollups``). LATEST keeps the (ts, seq) greatest event of each hour: the same
# tie-break as reading the raw events.
ROLLUP_SQL = (
    "INSERT INTO usage_rollups (customer_id, meter_id, hour, events, total, peak, "  # noqa: S608
    "latest_ts, latest_seq, latest_value) "
    "SELECT customer_id, meter_id, hour, count(*), sum(value), max(value), max(ts), "
    "(array_agg(seq ORDER BY ts DESC, seq DESC))[1], "
    "(array_agg(value ORDER BY ts DESC, seq DESC))[1] "
    f"FROM (SELECT customer_id, meter_id, {HOUR} AS hour, ts, seq, value FROM ins) i "
    "GROUP BY customer_id, meter_id, hour"
)

# Two ways to store a batch, the same rows either way:
# - NEW: a plain INSERT of the events and then of their ids, tried first when the batch
#   repeats no id within itself. The ids' primary key still refuses any id already stored (or
#   being stored by a concurrent transaction: the insert waits for it, then fails if it
#   committed), and the statement then stores nothing. It costs PostgreSQL less than the
#   idempotent form, which pays for the speculative insertion of ON CONFLICT on every id and
#   a join back to the document.
# - IDEMPOTENT: the ids first, ``ON CONFLICT (event_id) DO NOTHING``, then the events whose id
#   was inserted (the first occurrence of an id the batch repeats): for a batch the plain
#   insert refused and for one with a repeated id. Every repeat is counted as a duplicate.
_NEW_CTES = (
    "WITH ins AS ("  # noqa: S608
    + _INSERT
    + "SELECT "
    + _COLUMNS
    + "FROM jsonb_array_elements($1::text::jsonb) AS x "
    + _RETURNING
    + "), ids AS (INSERT INTO usage_event_ids (event_id) SELECT event_id FROM ins), "
    "roll AS (" + ROLLUP_SQL + ")"
)
_IDEMPOTENT_CTES = (
    "WITH doc AS (SELECT x, n FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY "  # noqa: S608
    "AS d(x, n)), "
    "ids AS (INSERT INTO usage_event_ids (event_id) SELECT x->>0 FROM doc "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id), "
    "ins AS ("
    + _INSERT
    + "SELECT "
    + _COLUMNS
    + "FROM (SELECT DISTINCT ON (x->>0) x, n FROM doc JOIN ids ON ids.event_id = doc.x->>0 "
    "ORDER BY x->>0, n) AS first ORDER BY n " + _RETURNING + "), roll AS (" + ROLLUP_SQL + ")"
)
_COUNT = " SELECT count(*) FROM ins"
INSERT_NEW_SQL = _NEW_CTES + _COUNT
INSERT_IDEMPOTENT_SQL = _IDEMPOTENT_CTES + _COUNT


def _forwarding(ctes: str) -> str:
    """The statement of ``ctes`` that also queues each new event for the providers its meter
    forwards to."""
    return (
        ctes  # noqa: S608
        + ", queued AS ("
        "INSERT INTO usage_outbox (provider, event_id, customer_id, meter_id, event_ts, status, "
        "attempts, next_attempt_at, created_at) "
        "SELECT f.provider, ins.event_id, ins.customer_id, ins.meter_id, ins.ts, 'pending', 0, "
        "$4, $4 FROM ins "
        "JOIN unnest($5::uuid[], $6::text[]) AS f(meter_id, provider) ON f.meter_id = ins.meter_id "
        "ON CONFLICT (provider, event_id) DO NOTHING)" + _COUNT
    )


_FORWARD_NEW_SQL = _forwarding(_NEW_CTES)
_FORWARD_IDEMPOTENT_SQL = _forwarding(_IDEMPOTENT_CTES)


async def insert_batch(
    conn: asyncpg.Connection, args: list[Any], *, forward: bool, new: bool
) -> int:
    """Store the batch; the number of events stored (the others were duplicates).

    :param forward: also queue the new events in the outbox (``args`` has its two arrays).
    :param new: the batch repeats no id within itself: try the plain insert first.
    """
    if new:
        try:
            return await _run(conn, _FORWARD_NEW_SQL if forward else INSERT_NEW_SQL, args)
        except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
            # Some id is stored already, or a concurrent batch holding it committed first (or
            # the two waited on each other's ids). The statement stored nothing; the
            # idempotent insert now skips and counts the repeats.
            log.debug("usage batch repeats stored ids; inserting idempotently")
    sql = _FORWARD_IDEMPOTENT_SQL if forward else INSERT_IDEMPOTENT_SQL
    # Two concurrent batches holding the same ids in different orders can deadlock on the
    # primary key; PostgreSQL aborts one statement whole, so running it again is safe.
    for attempt in range(_DEADLOCK_RETRIES):
        try:
            return await _run(conn, sql, args)
        except asyncpg.DeadlockDetectedError:
            if attempt == _DEADLOCK_RETRIES - 1:
                raise
            log.info("usage insert deadlocked with a concurrent batch; retrying")
    raise AssertionError("unreachable")


async def _run(conn: asyncpg.Connection, sql: str, args: list[Any]) -> int:
    """Run one insert statement (its own transaction) and count the events it stored.

    With a mutation being audited (``recordUsage`` by a key or a token), the statement also
    writes its audit row, as one more CTE: the batch, its rollups and its record commit
    together or not at all, at no extra round trip (a refused attempt writes neither; the next
    one carries it again).
    """
    hook = pending_hook()
    if hook is not None:
        audit, extra = hook.statement(len(args) + 1)
        assert sql.startswith("WITH ")
        sql = f"WITH {audit}, {sql[len('WITH ') :]}"
        args = [*args, *extra]
    counted = int(await conn.fetchval(sql, *args))
    if hook is not None:
        hook.committed()
    return counted
