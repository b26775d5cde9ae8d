"""Storing a validated usage batch: the insert and dedupe path of ``recordUsage``.

One ``INSERT … SELECT`` from a JSON document per batch. The primary key on the client's event
id makes a repeat — in the same batch, a later one or a concurrent one — a duplicate that is
never stored twice: a batch that repeats no id within itself is first inserted plainly
(cheaper for PostgreSQL), and if the key refuses it the statement stores nothing and the batch
is inserted again with ``ON CONFLICT (event_id) DO NOTHING``, which counts every repeat as a
duplicate. The same statement queues the new events for providers that bill usage (the
outbox, see :mod:`billing_gql.usage.forwarding`).
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from billing_gql.db.database import pending_hook

__all__ = ["INSERT_IDEMPOTENT_SQL", "INSERT_NEW_SQL", "insert_batch"]

log = logging.getLogger(__name__)

_DEADLOCK_RETRIES = 5

# The batch travels as one JSON document ``[[event_id, customer#, meter#, unix seconds,
# microseconds, value, properties], …]`` with customers and meters as 1-based positions in two
# small uuid arrays: encoding it is one C-level json.dumps, where per-element array parameters
# cost asyncpg ~4 us per event in Python (measured; the server's CPU is the scarce resource on
# this path). Timestamps as integer (seconds, microseconds) are exact and cheaper to build and
# to convert than ISO text. Rows are inserted in document order, so ``seq`` follows the batch.
_INSERT = (
    "INSERT INTO usage_events (event_id, customer_id, meter_id, ts, value, properties, "
    "ingested_at) "
    "SELECT x->>0, ($2::uuid[])[(x->>1)::int], ($3::uuid[])[(x->>2)::int], "
    "to_timestamp((x->>3)::bigint) + (x->>4)::int * interval '1 microsecond', "
    "(x->>5)::numeric, NULLIF(x->6, 'null'::jsonb), $4 "
    "FROM jsonb_array_elements($1::text::jsonb) AS x "
)
_IDEMPOTENT = "ON CONFLICT (event_id) DO NOTHING "
# Two ways to store a batch, the same rows either way:
# - NEW: a plain INSERT, tried first when the batch repeats no id within itself. The primary
#   key still refuses any id already stored (or being stored by a concurrent transaction: the
#   insert waits for it, then fails if it committed), and the statement then stores nothing.
#   It costs PostgreSQL ~25% less than the idempotent form, which pays for the speculative
#   insertion of ON CONFLICT (an extra index probe and WAL record) on every row even when
#   nothing conflicts: ~6 against ~8 ms of backend CPU per 1000 events from one connection,
#   7.3 against 9.5 from four (bench/usage_ingest.py).
# - IDEMPOTENT: ``ON CONFLICT (event_id) DO NOTHING``, for a batch the plain insert refused and
#   for one with a repeated id: every repeat is skipped and counted as a duplicate.
INSERT_NEW_SQL = _INSERT
INSERT_IDEMPOTENT_SQL = _INSERT + _IDEMPOTENT


def _forwarding(insert: str) -> str:
    """``insert`` that also queues each new event for the providers its meter forwards to."""
    return (
        "WITH ins AS (" + insert + "RETURNING event_id, meter_id), "  # noqa: S608
        "queued AS ("
        "INSERT INTO usage_outbox (provider, event_id, status, attempts, next_attempt_at, "
        "created_at) "
        "SELECT f.provider, ins.event_id, 'pending', 0, $4, $4 FROM ins "
        "JOIN unnest($5::uuid[], $6::text[]) AS f(meter_id, provider) ON f.meter_id = ins.meter_id "
        "ON CONFLICT (provider, event_id) DO NOTHING) "
        "SELECT count(*) FROM ins"
    )


_FORWARD_NEW_SQL = _forwarding(INSERT_NEW_SQL)
_FORWARD_IDEMPOTENT_SQL = _forwarding(INSERT_IDEMPOTENT_SQL)


async def insert_batch(
    conn: asyncpg.Connection, args: list[Any], *, forward: bool, new: bool
) -> int:
    """Store the batch; the number of events stored (the others were duplicates).

    :param forward: also queue the new events in the outbox (``args`` has its two arrays).
    :param new: the batch repeats no id within itself: try the plain insert first.
    """
    if new:
        try:
            return await _run(conn, _FORWARD_NEW_SQL if forward else INSERT_NEW_SQL, args, forward)
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
            return await _run(conn, sql, args, forward)
        except asyncpg.DeadlockDetectedError:
            if attempt == _DEADLOCK_RETRIES - 1:
                raise
            log.info("usage insert deadlocked with a concurrent batch; retrying")
    raise AssertionError("unreachable")


async def _run(conn: asyncpg.Connection, sql: str, args: list[Any], forward: bool) -> int:
    """Run one insert statement (its own transaction) and count the events it stored.

    With a mutation being audited (``recordUsage`` by a key or a token), the statement also
    writes its audit row, as a CTE: the batch and its record commit together or not at all,
    at no extra round trip (a refused attempt writes neither; the next one carries it again).
    """
    hook = pending_hook()
    if hook is not None:
        audit, extra = hook.statement(len(args) + 1)
        if sql.startswith("WITH "):
            sql = f"WITH {audit}, {sql[len('WITH ') :]}"
        else:
            sql = f"WITH {audit} {sql}"
        args = [*args, *extra]
    counted = await _count(conn, sql, args, forward)
    if hook is not None:
        hook.committed()
    return counted


async def _count(conn: asyncpg.Connection, sql: str, args: list[Any], forward: bool) -> int:
    if forward:  # the forwarding form counts the rows its CTE inserted
        return int(await conn.fetchval(sql, *args))
    # A plain INSERT's command tag is "INSERT 0 <n>".
    status: str = await conn.execute(sql, *args)
    return int(status.rsplit(" ", 1)[1])
