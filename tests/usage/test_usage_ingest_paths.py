"""recordUsage's two insert paths: the plain insert tried first, and ON CONFLICT DO NOTHING when
the primary key refuses it (an id already stored or stored meanwhile by a concurrent batch) or
when the batch repeats an id itself. Both must store the same rows and count the same
duplicates; the statements each batch ran are read with asyncpg's query loggers on every
connection of the app's pool."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from billing_helpers import Rows, make_customer, meter, record, usage

from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import MakeApi

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MARCH = {"from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}
POOL = 4


@dataclass(frozen=True)
class Insert:
    """One insert statement a batch ran."""

    idempotent: bool
    """``ON CONFLICT (event_id) DO NOTHING``, or the plain insert."""
    refused: str | None
    """The error's class when PostgreSQL refused it."""


class Inserts:
    """The usage inserts run on the app's pool connections (a query logger on each)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Insert] = []

    def __call__(self, logged: Any) -> None:
        query = str(getattr(logged, "query", ""))
        if "INSERT INTO usage_events" not in query:
            return
        exc = getattr(logged, "exception", None)
        with self.lock:
            self.seen.append(
                Insert(
                    idempotent="ON CONFLICT (event_id) DO NOTHING" in query,
                    refused=type(exc).__name__ if exc is not None else None,
                )
            )

    def take(self) -> list[Insert]:
        with self.lock:
            taken, self.seen = self.seen, []
        return taken


PLAIN = Insert(idempotent=False, refused=None)
PLAIN_REFUSED = Insert(idempotent=False, refused="UniqueViolationError")
IDEMPOTENT = Insert(idempotent=True, refused=None)


@pytest.fixture
async def app(
    make_api: MakeApi, clean_database: TestDatabase, app_settings: Settings
) -> AsyncIterator[tuple[ApiClient, Inserts]]:
    """An app on the test clock whose pool connections all log their usage inserts."""
    await Rows(clean_database).set_clock(NOW)
    settings = replace(
        app_settings,
        database=replace(app_settings.database, pool_min_size=POOL, pool_max_size=POOL),
        billing=BillingSettings(test_clock=True),
    )
    async with make_api(settings=settings) as api:
        pool = api.http.app.state.runtime.db.pool  # type: ignore[attr-defined]
        connections = [h._con for h in pool._holders if h._con is not None]
        assert len(connections) == POOL
        inserts = Inserts()
        for conn in connections:
            conn.add_query_logger(inserts)
        yield api, inserts


def event(i: int | str, cid: str, meter_code: str = "tokens", **extra: Any) -> dict[str, Any]:
    return {"id": f"e{i}", "customerId": cid, "meter": meter_code, **extra}


def batch(cid: str, n: int = 40) -> list[dict[str, Any]]:
    """Events with every kind of field: timestamps, values, properties, the default value."""
    events = []
    for i in range(n):
        extra: dict[str, Any] = {"timestamp": f"2026-03-0{1 + i % 9}T10:{i % 60:02d}:00.{i:06d}Z"}
        if i % 4:
            extra["value"] = f"{i}.{i % 7}"
        if i % 3 == 0:
            extra["properties"] = {"n": i, "tag": f"t{i % 2}"}
        events.append(event(i, cid, **extra))
    return events


async def stored(rows: Rows) -> list[tuple[Any, ...]]:
    """The stored events in ingestion order (``seq``), without the ingestion columns."""
    found = await rows.execute(
        "SELECT event_id, customer_id, meter_id, ts, value::text AS value, properties "
        "FROM usage_events ORDER BY seq"
    )
    return [tuple(r.values()) for r in found]


async def test_plain_and_idempotent_inserts_store_the_same_rows(
    app: tuple[ApiClient, Inserts], rows: Rows
) -> None:
    api, inserts = app
    cid = await make_customer(api, "acme")
    await meter(api, "tokens", "SUM")
    events = batch(cid)
    inserts.take()

    # New events: the plain insert alone stores them.
    assert await record(api, events) == {"accepted": 40, "duplicates": 0, "userErrors": []}
    assert inserts.take() == [PLAIN]
    plain = await stored(rows)
    assert [r[0] for r in plain] == [e["id"] for e in events]  # in the batch's order

    # The same batch with its last event already stored: the plain insert is refused whole,
    # the idempotent one stores the rest and counts the stored one as a duplicate.
    await rows.execute("DELETE FROM usage_events")
    assert (await record(api, events[-1:]))["accepted"] == 1
    inserts.take()
    assert await record(api, events) == {"accepted": 39, "duplicates": 1, "userErrors": []}
    assert inserts.take() == [PLAIN_REFUSED, IDEMPOTENT]
    fallback = await stored(rows)
    assert [r[0] for r in fallback] == [events[-1]["id"]] + [e["id"] for e in events[:-1]]
    assert sorted(fallback) == sorted(plain)

    # A batch repeating an id within itself goes straight to the idempotent insert; the first
    # occurrence is the one stored.
    await rows.execute("DELETE FROM usage_events")
    repeated = [*events, {**events[5], "value": "999"}]
    assert await record(api, repeated) == {"accepted": 40, "duplicates": 1, "userErrors": []}
    assert inserts.take() == [IDEMPOTENT]
    assert await stored(rows) == plain

    # Sending it all again stores nothing and counts every event.
    assert await record(api, repeated) == {"accepted": 0, "duplicates": 41, "userErrors": []}
    assert inserts.take() == [IDEMPOTENT]
    assert await record(api, events) == {"accepted": 0, "duplicates": 40, "userErrors": []}
    assert inserts.take() == [PLAIN_REFUSED, IDEMPOTENT]
    assert await stored(rows) == plain


async def test_an_invalid_batch_runs_no_insert(app: tuple[ApiClient, Inserts], rows: Rows) -> None:
    api, inserts = app
    cid = await make_customer(api, "acme")
    await meter(api, "tokens", "SUM")
    inserts.take()
    events = [*batch(cid, 10), event("bad", cid, "nope")]
    payload = await record(api, events, ok=False)
    assert [e["code"] for e in payload["userErrors"]] == ["UNKNOWN_METER"]
    assert inserts.take() == []
    assert await stored(rows) == []


async def test_concurrent_copies_and_overlaps_of_a_batch_store_each_event_once(
    app: tuple[ApiClient, Inserts], rows: Rows
) -> None:
    """Batches in flight together, in the same order (a client's retry while the first
    attempt still runs) and overlapping: the plain insert of each waits for the one holding an
    id, is refused once it commits, and the idempotent insert counts the repeats."""
    api, inserts = app
    cid = await make_customer(api, "acme")
    await meter(api, "tokens", "SUM")
    events = [event(i, cid, value=str(i)) for i in range(300)]
    expected = sum(range(300))
    for round_ in range(3):
        prefix = f"r{round_}-"
        mine = [{**e, "id": prefix + e["id"]} for e in events]
        batches = [mine, mine, mine[:200], mine[100:], mine[150:250], mine]
        results = await asyncio.gather(*(record(api, b) for b in batches))
        assert sum(r["accepted"] for r in results) == 300
        assert sum(r["accepted"] + r["duplicates"] for r in results) == sum(map(len, batches))
        summary = await usage(api, "tokens", c=cid, **MARCH)
        assert summary["value"] == str(expected * (round_ + 1))
    count = await rows.execute(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM usage_events"
    )
    assert (count[0]["n"], count[0]["d"]) == (900, 900)
    # Some batch had to fall back: its plain insert was refused.
    assert any(i.refused == "UniqueViolationError" for i in inserts.take())


async def test_batches_in_opposite_orders_do_not_double_count(
    app: tuple[ApiClient, Inserts], rows: Rows
) -> None:
    """Two plain inserts holding each other's ids deadlock; PostgreSQL aborts one whole and
    it falls back to the idempotent insert."""
    api, inserts = app
    cid = await make_customer(api, "acme")
    await meter(api, "tokens", "SUM")
    events = [event(i, cid, value="2") for i in range(200)]
    inserts.take()
    results = await asyncio.gather(record(api, events), record(api, events[::-1]))
    assert sum(r["accepted"] for r in results) == 200
    assert sum(r["duplicates"] for r in results) == 200
    assert (await usage(api, "tokens", c=cid, **MARCH))["value"] == "400"
    found = await rows.execute("SELECT count(*) AS n FROM usage_events")
    assert found[0]["n"] == 200
    ran = inserts.take()
    # One plain insert stored its batch; the other was refused (a stored id, or a deadlock)
    # and the idempotent insert counted its events as duplicates.
    assert ran.count(PLAIN) == 1
    assert [i.refused for i in ran if i.refused] in (
        ["UniqueViolationError"],
        ["DeadlockDetectedError"],
    )
    assert ran.count(IDEMPOTENT) == 1


async def test_raw_values_are_stored_as_graphql_coerces_them(
    app: tuple[ApiClient, Inserts], rows: Rows
) -> None:
    """The bulk path reads raw value strings itself (plain digits without building a Decimal):
    the stored numbers equal what the ordinary path (inline literals) stores."""
    api, _ = app
    cid = await make_customer(api, "acme")
    await meter(api, "tokens", "SUM")
    values = ["0007", "999999999999999999", "1e3", "2.50", "0", "\u0663", "-0", " 12 "]
    fast = [event(f"f{i}", cid, value=v) for i, v in enumerate(values)]
    assert (await record(api, fast))["accepted"] == len(values)
    literals = ", ".join(
        f'{{id: "o{i}", customerId: "{cid}", meter: "tokens", value: "{v}"}}'
        for i, v in enumerate(values)
    )
    inline = f"""mutation {{ recordUsage(input: {{events: [{literals}]}}) {{
        accepted userErrors {{ field code }} }} }}"""
    data = (await api.gql(inline, admin=True)).ok()
    assert data["recordUsage"] == {"accepted": len(values), "userErrors": []}
    found = {
        r["event_id"]: r["value"]
        for r in await rows.execute("SELECT event_id, value::text AS value FROM usage_events")
    }
    assert [found[f"ef{i}"] for i in range(len(values))] == [
        found[f"o{i}"] for i in range(len(values))
    ]
    assert found["ef0"] == "7" and found["ef1"] == "999999999999999999"
    assert found["ef5"] == "3" and found["ef6"] == "0"

    # 1e18 and beyond are refused on both paths, as are negative values.
    for bad in ["1000000000000000000", "-1", "00000000000000000000001e18"]:
        payload = await record(api, [event("x", cid, value=bad)], ok=False)
        assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
            (["input", "events", "0", "value"], "INVALID_INPUT")
        ], bad


async def test_an_uncoercible_event_anywhere_is_a_graphql_error(
    app: tuple[ApiClient, Inserts], rows: Rows
) -> None:
    """A value GraphQL would refuse wins over the batch's user errors, wherever it is."""
    api, inserts = app
    cid = await make_customer(api, "acme")
    await meter(api, "tokens", "SUM")
    inserts.take()
    events = [event(0, cid, "nope"), event(1, cid), event(2, cid, value=5)]
    response = await api.gql(
        """mutation($input: RecordUsageInput!) { recordUsage(input: $input) {
        accepted userErrors { field code } } }""",
        {"input": {"events": events}},
        admin=True,
    )
    assert response.status == 400
    assert "Decimal values are strings" in response.errors[0]["message"]
    assert inserts.take() == []
    assert await stored(rows) == []
