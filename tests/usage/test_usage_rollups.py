"""The hourly rollups answer exactly as the raw events do: random event sets stored through the
ingest statement (in several batches, with repeated ids, the worker merging rollup rows between
batches, some events later deleted) and random windows whose edges fall inside hours, on the
hour, or inside one hour; every aggregation's answer from :func:`aggregate_many` (rollups for
whole hours, raw events at the edges) is compared with the same aggregation computed over every
raw event in the window."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from billing_gql.metering.insert import insert_batch
from billing_gql.testing import TestDatabase
from billing_gql.usage.aggregate import UsageItem, aggregate_many, whole_hours
from billing_gql.usage.rollups import compact

BASE = datetime(2027, 3, 31, 21, 0, tzinfo=UTC)  # a month boundary falls inside the span
SPAN = 5 * 3600  # seconds of events after BASE
AGGREGATIONS = ("COUNT", "SUM", "MAX", "UNIQUE_COUNT", "LATEST")
CUSTOMERS = [uuid.UUID(int=1), uuid.UUID(int=2)]
METERS = [uuid.UUID(int=100 + i) for i in range(len(AGGREGATIONS))]

# The aggregations over every raw event of the window (the query before rollups existed).
RAW_SQL = """
SELECT CASE m.aggregation
    WHEN 'COUNT' THEN count(e.*)::numeric
    WHEN 'SUM' THEN COALESCE(sum(e.value), 0)
    WHEN 'MAX' THEN COALESCE(max(e.value), 0)
    WHEN 'UNIQUE_COUNT' THEN count(DISTINCT to_jsonb(e.value))::numeric
    ELSE COALESCE((SELECT l.value FROM usage_events l
                   WHERE l.customer_id = $1 AND l.meter_id = $2 AND l.ts >= $3 AND l.ts < $4
                   ORDER BY l.ts DESC, l.seq DESC LIMIT 1), 0)
END
FROM meters m LEFT JOIN usage_events e
  ON e.customer_id = $1 AND e.meter_id = m.id AND e.ts >= $3 AND e.ts < $4
WHERE m.id = $2 GROUP BY m.aggregation
"""

# Moments on the hour, on a quarter hour (many ties) and anywhere to the microsecond.
moments = st.one_of(
    st.integers(0, SPAN // 3600).map(lambda h: h * 3_600_000_000),
    st.integers(0, SPAN // 900).map(lambda q: q * 900_000_000),
    st.integers(0, SPAN * 1_000_000),
)
values = st.sampled_from(["1", "2.5", "2.50", "0.125", "-3", "10", "7", "1000000.000001"])
events = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.integers(0, len(METERS) - 1),
        moments,
        values,
        st.integers(0, 40),  # the event id: small, so ids repeat within and across batches
    ),
    max_size=60,
)


def document(batch: list[tuple[int, int, int, str, int]]) -> list[Any]:
    """A batch as the ingest statement takes it (see ``metering.validation``)."""
    rows = []
    for customer, meter, micros, value, key in batch:
        moment = BASE + timedelta(microseconds=micros)
        seconds = int(moment.timestamp())
        rows.append([f"e{key}", customer + 1, meter + 1, seconds, moment.microsecond, value, None])
    return rows


async def store(conn: asyncpg.Connection, batches: list[list[Any]], merges: list[bool]) -> None:
    """Ingest the batches; after the i-th, the worker merges rollup rows when ``merges[i]``."""
    for i, batch in enumerate(batches):
        ids = [row[0] for row in batch]
        args = [_json(batch), CUSTOMERS, METERS, BASE]
        await insert_batch(conn, args, forward=False, new=len(set(ids)) == len(ids))
        if i < len(merges) and merges[i]:
            # A small window, so one pass may stop inside an hour's rows.
            while await compact(conn, max_rows=7) or await compact(conn, max_rows=7):
                pass


def _json(rows: list[Any]) -> str:
    return json.dumps(rows)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stored=events,
    cuts=st.lists(st.integers(0, 60), max_size=4),
    deleted=st.lists(st.integers(0, 40), max_size=5),
    merges=st.lists(st.booleans(), max_size=6),
    windows=st.lists(st.tuples(moments, moments), min_size=1, max_size=4),
)
# One hour's events arriving in separate batches, the worker merging the hour's rollup rows
# after each: a smaller MAX, a LATEST tie on the timestamp that the later ingested event wins,
# an earlier timestamp that must not win.
@example(
    stored=[
        (0, meter, micros, value, key)
        for meter in range(len(METERS))
        for key, (micros, value) in enumerate(
            [(600_000_000, "10"), (900_000_000, "2.5"), (900_000_000, "7"), (60, "1")],
            start=meter * 4,
        )
    ],
    cuts=list(range(1, 20)),  # each event its own batch
    deleted=[],
    merges=[True] * 20,  # and the worker merges after each
    windows=[(0, 2 * 3_600_000_000)],
)
async def test_rollups_answer_as_the_raw_events(
    clean_database: TestDatabase,
    stored: list[tuple[int, int, int, str, int]],
    cuts: list[int],
    deleted: list[int],
    merges: list[bool],
    windows: list[tuple[int, int]],
) -> None:
    conn = await asyncpg.connect(clean_database.url)
    try:
        await conn.execute(
            "TRUNCATE usage_events, usage_event_ids, usage_rollups, usage_rollup_state, meters CASCADE"
        )
        await conn.executemany(
            "INSERT INTO meters (id, code, name, aggregation, created_at) "
            "VALUES ($1, $2::text, $2::text, $3, now())",
            [(m, a.lower(), a) for m, a in zip(METERS, AGGREGATIONS, strict=True)],
        )
        # Split the events into batches at the cut points.
        bounds = sorted({0, len(stored), *(min(c, len(stored)) for c in cuts)})
        batches = [document(stored[a:b]) for a, b in pairwise(bounds)]
        await store(conn, [b for b in batches if b], merges)
        if deleted:  # an operator's repair: the trigger recomputes those hours
            await conn.execute(
                "DELETE FROM usage_events WHERE event_id = ANY($1::text[])",
                [f"e{k}" for k in deleted],
            )
        items = [
            UsageItem(
                customer, meter, BASE + timedelta(microseconds=a), BASE + timedelta(microseconds=b)
            )
            # Every window drawn, and the whole span (many whole hours, edges inside hours).
            for a, b in [*windows, (1, SPAN * 1_000_000 - 1)]
            for customer in CUSTOMERS
            for meter in METERS
        ]
        got = await aggregate_many(conn, items)
        for item, value in zip(items, got, strict=True):
            raw = await conn.fetchval(
                RAW_SQL, item.customer_id, item.meter_id, item.start, item.end
            )
            assert value == raw, (item, whole_hours(item.start, item.end))
        # Each stored id is in the ids table exactly once, with its event.
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM usage_event_ids i FULL JOIN usage_events e USING (event_id) "
                "WHERE i.event_id IS NULL OR e.event_id IS NULL"
            )
            == 0
        )
    finally:
        await conn.close()


def test_whole_hours_of_a_window() -> None:
    at = datetime(2027, 1, 1, 10, 0, tzinfo=UTC)
    minute = timedelta(minutes=1)
    hour = timedelta(hours=1)
    assert whole_hours(at, at + 3 * hour) == (at, at + 3 * hour)
    assert whole_hours(at + minute, at + 3 * hour - minute) == (at + hour, at + 2 * hour)
    # No whole hour inside: only raw events, (end, end).
    assert whole_hours(at + minute, at + hour + minute) == (at + hour + minute,) * 2
    assert whole_hours(at + minute, at + 2 * minute) == (at + 2 * minute,) * 2
    assert whole_hours(at + hour, at) == (at, at)
    assert whole_hours(datetime.max.replace(tzinfo=UTC) - minute, datetime.max.replace(tzinfo=UTC))[
        0
    ] == datetime.max.replace(tzinfo=UTC)
