"""The entitlement cache across two real server processes on one database: a change committed
through one is seen by the other's very next check once the notification has reached it —
also while the other's listening connection is being killed and re-made."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from billing_helpers import (
    CANCEL,
    http_api,
    make_customer,
    make_plan,
    meter,
    process_env,
    record,
    subscribe,
)

from billing_gql.entitlements.listener import application_name
from billing_gql.testing import ApiClient, ServerProcess
from billing_gql.testing.database import TestDatabase

QUERY = """query($e: String!) { entitlement(externalCustomerId: $e, feature: "seats") {
  enabled limit } }"""
METERED = """query($e: String!) { entitlement(externalCustomerId: $e, feature: "api_calls") {
  enabled limit used remaining } }"""
WAIT = 30.0
_markers = itertools.count(int(time.time()))


@pytest.fixture(scope="module")
def servers(billing_database: TestDatabase) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = process_env(billing_database.url, BILLING_GQL_MANUAL_PROVIDER="1")
    with ServerProcess(env) as writer, ServerProcess(env) as reader:
        yield writer, reader


@pytest.fixture
async def apis(
    servers: tuple[ServerProcess, ServerProcess], clean_database: TestDatabase
) -> AsyncIterator[tuple[ApiClient, ApiClient]]:
    writer, reader = servers
    one, two = http_api(writer.url), http_api(reader.url)
    try:
        yield one, two
    finally:
        await one.http.aclose()
        await two.http.aclose()


async def metrics(server: ServerProcess) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/metrics")  # open: BILLING_GQL_METRICS_TOKEN is unset
    assert response.status_code == 200, response.text
    out: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, number = line.partition(" ")
            if name.startswith("billing_gql_entitlement_cache_"):
                out[name.removeprefix("billing_gql_entitlement_cache_")] = float(number)
    return out


async def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def notified(server: ServerProcess, url: str) -> None:
    """Return once ``server`` has processed every notification committed so far: a marker
    sent now arrives after them (a listener receives notifications in commit order)."""
    marker = next(_markers)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_notify('billing_gql_entitlements', $1)", f"sync:{marker}")
    finally:
        await conn.close()

    async def arrived() -> bool:
        return (await metrics(server))["synced"] >= marker

    await until(arrived, "the sync marker")


async def check(api: ApiClient) -> dict[str, Any]:
    data = await api.admin(QUERY, {"e": "usr_1"})
    value: dict[str, Any] = data["entitlement"]
    return value


async def listener_backend(url: str, server: ServerProcess) -> int | None:
    conn = await asyncpg.connect(url)
    try:
        pid: int | None = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            application_name(server.pid),
        )
        return pid
    finally:
        await conn.close()


async def test_a_change_through_one_process_is_the_others_next_answer(
    servers: tuple[ServerProcess, ServerProcess],
    apis: tuple[ApiClient, ApiClient],
    clean_database: TestDatabase,
) -> None:
    reader = servers[1]
    one, two = apis
    url = clean_database.url
    await make_plan(one, "pro", features=[{"feature": "seats", "limit": "5"}])
    customer = await make_customer(one, "usr_1")
    assert await check(two) == {"enabled": False, "limit": "0"}  # unknown to the plan yet
    subscription = await subscribe(one, customer, "pro")
    await notified(reader, url)
    assert await check(two) == {"enabled": True, "limit": "5"}
    before = await metrics(reader)
    assert await check(two) == {"enabled": True, "limit": "5"}
    assert (await metrics(reader))["hits_total"] == before["hits_total"] + 1

    # The reader answers from memory: a change that bypasses the triggers is not seen ...
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("UPDATE plan_features SET limit_value = 9 WHERE feature = 'seats'")
    finally:
        await conn.close()
    await notified(reader, url)
    assert await check(two) == {"enabled": True, "limit": "5"}
    # ... while every change that does fire them is, at the very next check.
    data = await one.admin(
        CANCEL, {"input": {"subscriptionId": subscription["id"], "atPeriodEnd": False}}
    )
    assert data["cancelSubscription"]["userErrors"] == []
    await notified(reader, url)
    assert await check(two) == {"enabled": False, "limit": "0"}


async def test_a_change_while_the_listener_is_killed_is_answered_fresh(
    servers: tuple[ServerProcess, ServerProcess],
    apis: tuple[ApiClient, ApiClient],
    clean_database: TestDatabase,
) -> None:
    reader = servers[1]
    one, two = apis
    url = clean_database.url
    await make_plan(one, "pro", features=[{"feature": "seats", "limit": "5"}])
    await make_plan(one, "max", features=[{"feature": "seats", "limit": "50"}])
    customer = await make_customer(one, "usr_1")
    first = await subscribe(one, customer, "pro")
    await notified(reader, url)
    assert await check(two) == {"enabled": True, "limit": "5"}
    assert await check(two) == {"enabled": True, "limit": "5"}  # cached

    for round_ in range(2):
        old = await listener_backend(url, reader)
        assert old is not None
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", old)

            async def gone(conn: asyncpg.Connection = conn, old: int = old) -> bool:
                found = await conn.fetchval("SELECT 1 FROM pg_stat_activity WHERE pid = $1", old)
                return found is None

            await until(gone, "the listener's backend to exit")
        finally:
            await conn.close()
        # A change now reaches no listener of the reader: its next check must still see it
        # (the cache is bypassed while the listener reconnects, and starts empty after).
        if round_ == 0:
            second = await subscribe(one, customer, "max")
            assert await check(two) == {"enabled": True, "limit": "55"}
        else:
            data = await one.admin(
                CANCEL, {"input": {"subscriptionId": second["id"], "atPeriodEnd": False}}
            )
            assert data["cancelSubscription"]["userErrors"] == []
            assert await check(two) == {"enabled": True, "limit": "5"}

        async def relistening(old: int = old) -> bool:
            backend = await listener_backend(url, reader)
            return backend not in (None, old) and (await metrics(reader))["listener_connected"] == 1

        await until(relistening, "the reader to listen again")
        # Listening again: cached again, and coherent again.
        expected = {"enabled": True, "limit": "55" if round_ == 0 else "5"}
        assert await check(two) == expected
        before = await metrics(reader)
        assert await check(two) == expected
        assert (await metrics(reader))["hits_total"] == before["hits_total"] + 1

    data = await one.admin(CANCEL, {"input": {"subscriptionId": first["id"], "atPeriodEnd": False}})
    assert data["cancelSubscription"]["userErrors"] == []
    await notified(reader, url)
    assert await check(two) == {"enabled": False, "limit": "0"}


async def test_usage_over_a_limit_through_one_process_is_the_others_next_answer(
    servers: tuple[ServerProcess, ServerProcess],
    apis: tuple[ApiClient, ApiClient],
    clean_database: TestDatabase,
) -> None:
    """Usage lands in the partitioned ``usage_events`` (its notification triggers sit on the
    partitioned parent): a batch recorded through one process, crossing the metered limit, is
    the other's very next answer, which it served from memory just before."""
    reader = servers[1]
    one, two = apis
    url = clean_database.url
    await meter(one, "api_calls")
    await make_plan(one, "pro", features=[{"feature": "api_calls", "limit": "3"}])
    customer = await make_customer(one, "usr_1")
    await subscribe(one, customer, "pro")
    await notified(reader, url)

    async def metered() -> dict[str, Any]:
        data = await two.admin(METERED, {"e": "usr_1"})
        value: dict[str, Any] = data["entitlement"]
        return value

    fresh = {"enabled": True, "limit": "3", "used": "0", "remaining": "3"}
    assert await metered() == fresh
    before = await metrics(reader)
    assert await metered() == fresh  # from memory
    assert (await metrics(reader))["hits_total"] == before["hits_total"] + 1

    events = [{"id": f"evt_{n}", "customerId": customer, "meter": "api_calls"} for n in range(5)]
    await record(one, events[:2])
    await notified(reader, url)
    assert await metered() == {"enabled": True, "limit": "3", "used": "2", "remaining": "1"}
    await record(one, events)  # two repeats, three new: past the limit
    await notified(reader, url)
    assert await metered() == {"enabled": False, "limit": "3", "used": "5", "remaining": "0"}

    conn = await asyncpg.connect(url)
    try:
        kind = await conn.fetchval(
            "SELECT relkind::text FROM pg_class WHERE relname = 'usage_events'"
        )
        stored = await conn.fetch("SELECT tableoid::regclass::text AS part FROM usage_events")
    finally:
        await conn.close()
    assert kind == "p"
    assert len(stored) == 5 and all(r["part"] != "usage_events" for r in stored)


async def test_metrics_carry_the_cache_figures(
    servers: tuple[ServerProcess, ServerProcess], apis: tuple[ApiClient, ApiClient]
) -> None:
    """The cache's figures are series of the prometheus_client ``GET /metrics``."""
    reader = servers[1]
    figures = await metrics(reader)
    assert set(figures) == {
        "entries", "size", "listener_connected", "synced", "hits_total", "misses_total",
        "bypassed_total", "refused_total", "invalidations_total", "clears_total",
    }  # fmt: skip
    assert figures["size"] > 0
    await check(apis[1])
    after = await metrics(reader)
    assert after["hits_total"] + after["misses_total"] + after["bypassed_total"] > (
        figures["hits_total"] + figures["misses_total"] + figures["bypassed_total"]
    )
