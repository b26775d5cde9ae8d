"""Scale mode of ``bench/usage_ingest.py`` (``--scale N``): usage() and invoicePreview at N events.

1. Defines three meters (COUNT, SUM, MAX) and a plan charging all three through the GraphQL
   API of a real ``billing-gql serve`` process; ``--customers`` customers; one of them (the
   target) subscribed with a current period that started 20 days (and some minutes, so both
   window edges fall inside hours) ago.
2. Generates N events **in the database** (``INSERT … SELECT generate_series``, not over HTTP)
   in statements of ``--chunk`` events, each the same statement shape as ``recordUsage``'s:
   events, their ids and the hourly rollups (the ingest path's own rollup upsert) together.
   Events are in time order over ``--months`` months up to now, spread over the customers;
   every ``N // 1,000,000``-th event is the target's, inside its current period, so the target
   holds 1,000,000 events in its period, interleaved in the heap with everyone else's.
3. Times ``usage()`` (the target's SUM meter over its current period) and ``invoicePreview``
   of its subscription through ``POST /graphql`` (loopback, keep-alive), p50 and p99, with
   ``GET /healthz`` (one ``SELECT 1``) timed the same way as the machine's floor; and, on a
   direct connection, the same aggregation read from the raw events alone (the query before
   rollups) for comparison.

The month partitions are made by the worker's own function (``usage.partitions.ensure_month``).
Needs ~250 bytes of disk per event (100,000,000 events: ~25 GB).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from billing_gql.metering.insert import ROLLUP_SQL
from billing_gql.testing.server import ServerProcess
from billing_gql.usage.partitions import MONTHS_AHEAD, ensure_month, month_start

TARGET_EVENTS = 1_000_000
METERS = [
    ("api_calls", "COUNT", "PER_UNIT"),
    ("tokens", "SUM", "GRADUATED"),
    ("storage_gb", "MAX", "VOLUME"),
]
USAGE = "query($c: ID!, $m: String!) { usage(customerId: $c, meter: $m) { value from to } }"
PREVIEW = (
    "query($id: ID!) { invoicePreview(subscriptionId: $id) { periodStart periodEnd "
    "lines { description quantity amount { amount currency } } total { amount currency } } }"
)
CREATE_METER = (
    "mutation($input: CreateMeterInput!) { createMeter(input: $input) { meter { code } "
    "userErrors { code message } } }"
)
CREATE_PLAN = (
    "mutation($input: CreatePlanInput!) { createPlan(input: $input) { plan { id } "
    "userErrors { code message field } } }"
)
UPSERT = (
    "mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) "
    "{ customer { id } userErrors { code } } }"
)

# One chunk of generated events: the same statement shape as recordUsage's insert (events,
# ids, rollups in one statement). $1..$2: the chunk's event numbers; $3: N; $4: the stride of
# the target's events; $5/$6: the target's period start and now; $7: the first event's time;
# $8: the customers; $9: the meters; $10: the target.
GENERATE_SQL = (
    "WITH ins AS ("
    "INSERT INTO usage_events (event_id, customer_id, meter_id, ts, value, properties, "
    "ingested_at) "
    "SELECT 'scale-' || lpad(g::text, 10, '0'), "
    "CASE WHEN g % $4 = 0 THEN $10::uuid "
    "ELSE ($8::uuid[])[1 + (g * 7919) % cardinality($8::uuid[])] END, "
    "($9::uuid[])[1 + (CASE WHEN g % $4 = 0 THEN g / $4 ELSE g END) % 3], "
    "CASE WHEN g % $4 = 0 THEN $5::timestamptz + ($6::timestamptz - $5) * (g / $3::float8) "
    "ELSE $7::timestamptz + ($6::timestamptz - $7) * (g / $3::float8) END, "
    "1 + (g * 31) % 5000, NULL, $6 "
    "FROM generate_series($1::bigint, $2::bigint - 1) AS g "
    "RETURNING event_id, customer_id, meter_id, ts, value, seq), "
    "ids AS (INSERT INTO usage_event_ids (event_id) SELECT event_id FROM ins), "
    "roll AS (" + ROLLUP_SQL + ") "
    "SELECT count(*) FROM ins"
)

# The aggregation before rollups: every raw event of the window.
RAW_SUM_SQL = (
    "SELECT COALESCE(sum(value), 0) FROM usage_events "
    "WHERE customer_id = $1 AND meter_id = $2 AND ts >= $3 AND ts < $4"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scale",
        type=int,
        default=0,
        help="scale mode: generate this many events in the "
        "database and time usage()/invoicePreview (e.g. 100000000)",
    )
    parser.add_argument("--months", type=int, default=12, help="scale mode: months of events")
    parser.add_argument(
        "--chunk", type=int, default=1_000_000, help="scale mode: events per statement"
    )
    parser.add_argument(
        "--calls", type=int, default=500, help="scale mode: timed calls of each query"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _admin(http: Any, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": query, "variables": variables})
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    data: dict[str, Any] = body["data"]
    return data


async def _catalog(http: Any, conn: asyncpg.Connection, customers: int) -> dict[str, Any]:
    """Meters, the plan, the customers and the target's subscription."""
    for code, aggregation, _ in METERS:
        data = await _admin(
            http, CREATE_METER, {"input": {"code": code, "name": code, "aggregation": aggregation}}
        )
        assert data["createMeter"]["userErrors"] == [], data
    tiers = [{"upTo": "100000", "unitAmount": "0.001"}, {"upTo": None, "unitAmount": "0.0005"}]
    charges = [
        {"meter": "api_calls", "model": "PER_UNIT", "currency": "USD", "unitAmount": "0.0001"},
        {"meter": "tokens", "model": "GRADUATED", "currency": "USD", "tiers": tiers},
        {"meter": "storage_gb", "model": "VOLUME", "currency": "USD", "tiers": tiers},
    ]
    plan = {
        "code": "scale",
        "name": "Scale",
        "interval": "MONTH",
        "prices": [{"currency": "USD", "amount": "49.00"}],
        "features": [],
        "charges": charges,
    }
    data = await _admin(http, CREATE_PLAN, {"input": plan})
    assert data["createPlan"]["userErrors"] == [], data
    plan_id = uuid.UUID(data["createPlan"]["plan"]["id"])
    data = await _admin(http, UPSERT, {"input": {"externalId": "scale-target"}})
    target = uuid.UUID(data["upsertCustomer"]["customer"]["id"])
    now = datetime.now(UTC)
    others = [uuid.uuid4() for _ in range(customers)]
    await conn.executemany(
        "INSERT INTO customers (id, external_id, created_at, updated_at) VALUES ($1,$2,$3,$3)",
        [(c, f"scale-{i}", now) for i, c in enumerate(others)],
    )
    start = now - timedelta(days=20, minutes=17, seconds=23.456789)
    subscription = uuid.uuid4()
    # The subscription row as the engine writes it (tests do the same, tests/billing_helpers).
    await conn.execute(
        "INSERT INTO subscriptions (id, customer_id, plan_id, provider, status, currency, "
        "quantity, current_period_start, current_period_end, created_at, updated_at) "
        "VALUES ($1, $2, $3, 'manual', 'ACTIVE', 'USD', 1, $4, $5, $4, $4)",
        subscription,
        target,
        plan_id,
        start,
        start + timedelta(days=30),
    )
    meters = {r["code"]: r["id"] for r in await conn.fetch("SELECT id, code FROM meters")}
    return {
        "target": target,
        "others": others,
        "subscription": subscription,
        "period_start": start,
        "meters": [meters[code] for code, _, _ in METERS],
    }


async def _load(conn: asyncpg.Connection, args: argparse.Namespace, setup: dict[str, Any]) -> float:
    """Generate the events; returns the seconds it took."""
    now = datetime.now(UTC)
    first = month_start(now, -(args.months - 1))
    month = first
    while month <= month_start(now, MONTHS_AHEAD):
        await ensure_month(conn, month)
        month = month_start(month, 1)
    total = args.scale
    stride = max(1, total // TARGET_EVENTS)
    await conn.execute("SET synchronous_commit = off")
    started = time.perf_counter()
    for lo in range(0, total, args.chunk):
        hi = min(total, lo + args.chunk)
        await conn.fetchval(
            GENERATE_SQL,
            lo,
            hi,
            total,
            stride,
            setup["period_start"],
            now,
            first,
            setup["others"],
            setup["meters"],
            setup["target"],
        )
        elapsed = time.perf_counter() - started
        print(f"  {hi:>13,} events  {elapsed:8.0f} s  {hi / elapsed:9,.0f} events/s", flush=True)
    seconds = time.perf_counter() - started
    await conn.execute("VACUUM ANALYZE usage_rollups")
    await conn.execute("ANALYZE usage_events")
    return seconds


async def _timed(http: Any, query: str, variables: dict[str, Any], calls: int) -> list[float]:
    timings = []
    for i in range(calls + 20):
        started = time.perf_counter()
        await _admin(http, query, variables)
        if i >= 20:  # the first calls warm caches (and set hint bits on fresh rows)
            timings.append(time.perf_counter() - started)
    return timings


def _line(label: str, timings: list[float]) -> str:
    return (
        f"{label:<44} p50 {statistics.median(timings) * 1000:7.2f} ms  "
        f"p99 {percentile(timings, 0.99) * 1000:7.2f} ms  ({len(timings)} calls)"
    )


async def run_scale(args: argparse.Namespace, bench: Any, admin_key: str, http_client: Any) -> int:
    env: dict[str, str | None] = {
        "DATABASE_URL": bench.url,
        "BILLING_GQL_ADMIN_KEYS": admin_key,
        "BILLING_GQL_DATA_DIR": None,
    }
    conn = await asyncpg.connect(bench.url)
    try:
        with ServerProcess(env, args=("--no-worker", "--host", "127.0.0.1")) as server:
            headers = {"authorization": f"Bearer {admin_key}", "accept": "application/json"}
            async with http_client(server.url, headers) as http:
                setup = await _catalog(http, conn, args.customers)
                print(
                    f"generating {args.scale:,} events over {args.months} months "
                    f"({args.customers:,} customers + the target) in the database:"
                )
                seconds = await _load(conn, args, setup)
                target, tokens = setup["target"], setup["meters"][1]
                now = datetime.now(UTC)
                in_period = await conn.fetchval(
                    "SELECT count(*) FROM usage_events WHERE customer_id = $1 AND ts >= $2",
                    target,
                    setup["period_start"],
                )
                stored = int(await conn.fetchval("SELECT sum(events) FROM usage_rollups"))
                size = await conn.fetchval(
                    "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c "
                    "WHERE c.relname LIKE 'usage_event%' AND c.relkind = 'r'"
                )
                print(
                    f"loaded {stored:,} events in {seconds:,.0f} s "
                    f"({stored / seconds:,.0f} events/s, events + ids + rollups, {size})"
                )
                print(f"the target customer holds {in_period:,} events in its current period")
                usage = await _timed(http, USAGE, {"c": str(target), "m": "tokens"}, args.calls)
                preview = await _timed(
                    http, PREVIEW, {"id": str(setup["subscription"])}, args.calls
                )
                raw = []
                for _ in range(max(5, args.calls // 50)):
                    started = time.perf_counter()
                    await conn.fetchval(RAW_SUM_SQL, target, tokens, setup["period_start"], now)
                    raw.append(time.perf_counter() - started)
                health = []
                for _ in range(args.calls):
                    started = time.perf_counter()
                    (await http.get("/healthz")).raise_for_status()
                    health.append(time.perf_counter() - started)
                print(_line("GET /healthz (SELECT 1: this machine's floor)", health))
                print(_line("usage() over HTTP (rollups + edges)", usage))
                print(_line("invoicePreview over HTTP (3 usage charges)", preview))
                print(_line("the same SUM from raw events (before rollups)", raw))
    finally:
        await conn.close()
    return 0
