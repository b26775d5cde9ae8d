"""Usage ingestion benchmark: recordUsage over HTTP against asyncpg COPY; ``--scale N``: usage()
and invoicePreview latency at N stored events.

Run from a checkout (one command; it creates and drops its own database)::

    DATABASE_URL=postgresql://postgres@127.0.0.1/postgres .venv/bin/python bench/usage_ingest.py
    DATABASE_URL=… .venv/bin/python bench/usage_ingest.py --scale 100000000

Without ``DATABASE_URL`` it starts an embedded PostgreSQL in a temporary directory.

Default mode:

1. Starts ``billing-gql serve --no-worker`` as a real process on a fresh database.
2. Loads the same events: by asyncpg ``copy_records_to_table`` (the baseline) into a table of
   the shape the events had before partitioning (the event id its primary key and the
   ``(customer_id, meter_id, ts)`` index, no rollups); by the two statements ``recordUsage``
   runs, each sent alone from as many asyncpg connections as the HTTP load uses (the
   database's share of the work): the plain insert it tries first and the
   ``ON CONFLICT (event_id) DO NOTHING`` one it falls back to when an id is already stored —
   both store the events in the partitioned table, their ids and the hourly rollups; and
   through ``POST /graphql`` ``recordUsage`` in batches of 1000 from concurrent keep-alive
   connections. Then it sends the same batches again (every event a duplicate: the fallback
   path). Request bodies, documents and COPY records are prepared before timing; each load
   starts after a CHECKPOINT; the best of a few rounds counts (the machine may be shared), and
   the spread of the ratio across rounds is printed too.

It prints events/s for each load, the ratios, and CPU per 1000 events of each process (where
/proc is readable). Scale mode is described in ``bench/usage_scale.py``. Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from billing_gql.db.database import Database, dumps
from billing_gql.metering.insert import INSERT_IDEMPOTENT_SQL, INSERT_NEW_SQL
from billing_gql.runtime import migrate_database
from billing_gql.testing.server import ServerProcess
from billing_gql.usage.meters import load_meters

sys.path.insert(0, str(Path(__file__).parent))
from usage_scale import add_arguments, run_scale

ADMIN_KEY = "bench-admin-key"
RECORD = (
    "mutation($input: RecordUsageInput!) { recordUsage(input: $input) "
    "{ accepted duplicates userErrors { field code } } }"
)
METERS = [("api_calls", "COUNT", None), ("tokens", "SUM", None), ("storage_gb", "MAX", None)]
COLUMNS = ["event_id", "customer_id", "meter_id", "ts", "value", "properties", "ingested_at"]
USAGE_TABLES = "usage_events, usage_event_ids, usage_rollups"
LOADS = {
    "copy": "COPY (copy_records_to_table), the baseline",
    "sql": "its plain INSERT alone (SQL)",
    "sql_idempotent": "its INSERT … ON CONFLICT alone (SQL)",
    "graphql": "recordUsage over HTTP (new events)",
    "replay": "recordUsage over HTTP (the same again)",
}


def http_client(url: str, headers: dict[str, str]) -> httpx.AsyncClient:
    """A keep-alive client with TCP_NODELAY (without it, delayed ACKs add ~40 ms per call)."""
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    )
    return httpx.AsyncClient(base_url=url, timeout=120, headers=headers, transport=transport)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per load")
    parser.add_argument("--batch", type=int, default=1000, help="events per recordUsage call")
    parser.add_argument("--connections", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument(
        "--spread",
        choices=["recent", "month"],
        default="recent",
        help="event timestamps: the last 5 minutes (default) or the month so far",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="load rounds (the machine may be shared: the best round counts)",
    )
    add_arguments(parser)
    return parser.parse_args()


class BenchDatabase:
    """A database of its own on DATABASE_URL's server, or on an embedded PostgreSQL."""

    def __init__(self) -> None:
        self.server_url = os.environ.get("DATABASE_URL")
        self.name = f"billing_gql_bench_{uuid.uuid4().hex[:10]}"
        self.url = ""
        self._embedded: Any = None
        self._tmp: Path | None = None

    async def __aenter__(self) -> BenchDatabase:
        if self.server_url:
            admin_url = self.server_url
        else:
            from billing_gql.db.embedded import EmbeddedPostgres

            self._tmp = Path(tempfile.mkdtemp(prefix="bgql-bench-"))
            self._embedded = EmbeddedPostgres(self._tmp)
            admin_url = await asyncio.to_thread(self._embedded.start)
        self._admin = urlsplit(admin_url)._replace(path="/postgres").geturl()
        self.url = urlsplit(admin_url)._replace(path=f"/{self.name}").geturl()
        conn = await asyncpg.connect(self._admin)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        await migrate_database(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        conn = await asyncpg.connect(self._admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()
        if self._embedded is not None:
            self._embedded.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def make_events(
    n: int,
    prefix: str,
    customers: list[uuid.UUID],
    now: datetime,
    start: datetime,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """Events spread over [start, now), a third with properties, as an app would send them."""
    span = (now - start).total_seconds()
    events = []
    for i in range(n):
        code = METERS[i % len(METERS)][0]
        event: dict[str, Any] = {
            "id": f"{prefix}-{i:08d}-{rng.getrandbits(32):08x}",
            "customerId": str(customers[rng.randrange(len(customers))]),
            "meter": code,
            "timestamp": (start + timedelta(seconds=rng.random() * span)).isoformat(),
            "value": str(rng.randint(1, 5000)),
        }
        if i % 3 == 0:
            event["properties"] = {"region": rng.choice(["eu", "us", "ap"]), "model": "m-1"}
        events.append(event)
    return events


async def copy_connection(url: str) -> asyncpg.Connection:
    """A connection whose jsonb codec is binary (COPY ... BINARY needs one)."""
    conn = await asyncpg.connect(url)
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + dumps(value).encode(),
        decoder=lambda data: json.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )
    return conn


def copy_records(
    events: list[dict[str, Any]], meters: dict[str, uuid.UUID], ingested: datetime
) -> list[tuple[Any, ...]]:
    return [
        (
            e["id"],
            uuid.UUID(e["customerId"]),
            meters[e["meter"]],
            datetime.fromisoformat(e["timestamp"]),
            Decimal(e["value"]),
            e.get("properties"),
            ingested,
        )
        for e in events
    ]


class RawHttpClient:
    """A minimal keep-alive HTTP/1.1 client for the load: pre-built requests, one socket.

    httpx spent ~3.7 ms of CPU per 180 KB request here, on a 2-core machine that also runs the
    server and PostgreSQL; this needs a small fraction of that, like a native load generator.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawHttpClient:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.writer is not None
        self.writer.close()
        await self.writer.wait_closed()

    def request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, raw_request: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw_request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)


async def graphql_load(
    url: str,
    events: list[dict[str, Any]],
    batch: int,
    connections: int,
    backends: Callable[[], Awaitable[list[int]]],
    server_pid: int | None,
    *,
    expect_new: bool = True,
) -> tuple[float, str]:
    """Send the events through recordUsage; ``expect_new``: all accepted, else all duplicates."""
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "authorization": f"Bearer {ADMIN_KEY}",
    }
    builder = RawHttpClient(url)
    requests = [
        builder.request(
            "/graphql",
            json.dumps(
                {"query": RECORD, "variables": {"input": {"events": events[i : i + batch]}}}
            ).encode(),
            headers,
        )
        for i in range(0, len(events), batch)
    ]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    accepted = duplicates = 0

    async def client() -> None:
        nonlocal accepted, duplicates
        async with RawHttpClient(url) as http:
            while True:
                try:
                    request = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                status, body = await http.send(request)
                payload = json.loads(body)["data"]["recordUsage"]
                if status != 200 or payload["userErrors"]:
                    raise RuntimeError((status, payload["userErrors"][:3]))
                accepted += payload["accepted"]
                duplicates += payload["duplicates"]

    # Warm the server outside the timing: its document cache, and a pool connection per HTTP
    # connection (a batch naming an unknown meter is validated against the database and
    # refused whole: nothing is stored).
    refused = events[0] | {"meter": "warm-up-unknown-meter"}
    warm = json.dumps({"query": RECORD, "variables": {"input": {"events": [refused]}}}).encode()

    async def warm_up() -> None:
        async with RawHttpClient(url) as http:
            for _ in range(3):
                status, body = await http.send(http.request("/graphql", warm, headers))
                errors = json.loads(body)["data"]["recordUsage"]["userErrors"]
                assert status == 200 and errors[0]["code"] == "UNKNOWN_METER", body

    await asyncio.gather(*(warm_up() for _ in range(connections)))
    meter = CpuMeter(server_pid, await backends())
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    if (accepted, duplicates) != ((len(events), 0) if expect_new else (0, len(events))):
        raise RuntimeError(f"accepted {accepted}, duplicates {duplicates} of {len(events)}")
    return elapsed, meter.per_thousand(len(events))


async def main() -> int:
    args = parse_args()
    rng = random.Random(20261122)
    async with BenchDatabase() as bench:
        if args.scale:
            return await run_scale(args, bench, ADMIN_KEY, http_client)
        db = await Database.connect(bench.url, min_size=1, max_size=2)
        try:
            return await run(args, bench, db, rng)
        finally:
            await db.close()


def sql_documents(
    events: list[dict[str, Any]],
    batch: int,
    customers: list[uuid.UUID],
    meters: list[uuid.UUID],
    codes: list[str],
) -> list[str]:
    """The batches as the service sends them to PostgreSQL (see ``usage.ingest``)."""
    position = {str(c): i for i, c in enumerate(customers, start=1)}
    meter_position = {code: i for i, code in enumerate(codes, start=1)}
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    docs = []
    for i in range(0, len(events), batch):
        rows = []
        for e in events[i : i + batch]:
            since = datetime.fromisoformat(e["timestamp"]) - epoch
            rows.append(
                [
                    e["id"],
                    position[e["customerId"]],
                    meter_position[e["meter"]],
                    since.days * 86400 + since.seconds,
                    since.microseconds,
                    e["value"],
                    e.get("properties"),
                ]
            )
        docs.append(json.dumps(rows))
    return docs


async def sql_load(
    url: str,
    statement: str,
    docs: list[str],
    customers: list[uuid.UUID],
    meters: list[uuid.UUID],
    connections: int,
    now: datetime,
) -> tuple[float, str]:
    """One of the service's insert statements alone, from as many connections."""
    sql = statement
    conns = [await asyncpg.connect(url) for _ in range(connections)]
    try:
        pending = list(reversed(docs))
        meter = CpuMeter(None, [c.get_server_pid() for c in conns])

        async def worker(conn: asyncpg.Connection) -> None:
            while pending:
                await conn.execute(sql, pending.pop(), customers, meters, now)

        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        return time.perf_counter() - started, meter.per_thousand(len(docs) * 1000)
    finally:
        for conn in conns:
            await conn.close()


class CpuMeter:
    """CPU seconds used by this process, the server process and the database's backends
    (read from /proc; the numbers are skipped where it is not readable)."""

    def __init__(self, server_pid: int | None, backend_pids: list[int]) -> None:
        self.pids = {"server": [server_pid] if server_pid else [], "postgres": backend_pids}
        self.start = self._read()

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _read(self) -> dict[str, float]:
        times = os.times()
        used = {"client": times.user + times.system}
        for name, pids in self.pids.items():
            used[name] = sum(self._cpu(pid) for pid in pids)
        return used

    def per_thousand(self, events: int) -> str:
        end = self._read()
        parts = [
            f"{name} {(end[name] - self.start[name]) / events * 1e6:.1f} ms"
            for name in ("server", "postgres", "client")
            if self.pids.get(name, True)
        ]
        return "CPU per 1000 events: " + ", ".join(parts)


async def backend_pids(db: Database, name: str) -> list[int]:
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name
    )
    return [r["pid"] for r in rows]


async def run(
    args: argparse.Namespace, bench: BenchDatabase, db: Database, rng: random.Random
) -> int:
    now = datetime.now(UTC).replace(microsecond=0)
    month = now.replace(day=1, hour=0, minute=0, second=0)
    customers = [uuid.uuid4() for _ in range(args.customers)]
    await db.pool.executemany(
        "INSERT INTO customers (id, external_id, created_at, updated_at) VALUES ($1,$2,$3,$3)",
        [(c, f"bench-{i}", now) for i, c in enumerate(customers)],
    )
    for code, aggregation, prop in METERS:
        await db.execute(
            "INSERT INTO meters (code, name, aggregation, property, created_at) "
            "VALUES ($1,$2,$3,$4,$5)",
            code,
            code,
            aggregation,
            prop,
            now,
        )
    meters = {m.code: m.id for m in await load_meters(db.pool)}
    # recent: timestamps in the 5 minutes before now, as an app reporting usage as it happens
    # sends them (a batch touches one or two hours of each customer's meters); month: spread
    # over the month so far (most events land in an hour of their own: the rollups' worst case).
    since = now - timedelta(minutes=5) if args.spread == "recent" else month
    events = make_events(args.events, "gql", customers, now, since, rng)
    records = copy_records(events, meters, now)
    # The baseline: COPY into the events table as it was before partitioning and rollups.
    await db.execute(
        "CREATE TABLE usage_events_copy (event_id varchar(255) PRIMARY KEY, "
        "customer_id uuid NOT NULL, meter_id uuid NOT NULL, ts timestamptz NOT NULL, "
        "value numeric NOT NULL DEFAULT 1, properties jsonb, ingested_at timestamptz NOT NULL, "
        "seq bigserial NOT NULL)"
    )
    await db.execute("CREATE INDEX ON usage_events_copy (customer_id, meter_id, ts)")
    codes = [code for code, _, _ in METERS]
    meter_ids = [meters[code] for code in codes]
    docs = sql_documents(events, args.batch, customers, meter_ids, codes)
    indexes = await db.fetch(
        "SELECT indexdef FROM pg_indexes WHERE tablename = ANY($1) ORDER BY indexdef",
        ["usage_events", "usage_event_ids", "usage_rollups", "usage_events_copy"],
    )
    print("indexes: COPY's table (usage_events_copy) and recordUsage's (the others):")
    for row in indexes:
        print("  ", row["indexdef"])
    print(
        f"{len(events):,} events per load ({args.spread}), recordUsage batches of {args.batch} "
        "over "
        f"{args.connections} HTTP connections; {os.cpu_count()} CPUs shared by the load "
        f"generator, the server and PostgreSQL; best of {args.rounds} rounds"
    )

    env: dict[str, str | None] = {
        "DATABASE_URL": bench.url,
        "BILLING_GQL_ADMIN_KEYS": ADMIN_KEY,
        "BILLING_GQL_DATA_DIR": None,
    }
    rates: dict[str, list[float]] = {load: [] for load in LOADS}
    with ServerProcess(env, args=("--no-worker", "--host", "127.0.0.1")) as server:
        server_pid = server._proc.pid if server._proc else None
        for round_ in range(1, args.rounds + 1):
            await db.execute(f"TRUNCATE usage_events_copy, {USAGE_TABLES}")
            await db.execute("CHECKPOINT")
            cpu: dict[str, str] = {}
            seconds: dict[str, float] = {}
            conn = await copy_connection(bench.url)
            try:
                meter = CpuMeter(None, await backend_pids(db, bench.name))
                started = time.perf_counter()
                await conn.copy_records_to_table(
                    "usage_events_copy", records=records, columns=COLUMNS
                )
                seconds["copy"] = time.perf_counter() - started
                cpu["copy"] = meter.per_thousand(len(events))
            finally:
                await conn.close()
            for load, statement in (
                ("sql", INSERT_NEW_SQL),
                ("sql_idempotent", INSERT_IDEMPOTENT_SQL),
            ):
                await db.execute(f"TRUNCATE {USAGE_TABLES}")
                await db.execute("CHECKPOINT")
                seconds[load], cpu[load] = await sql_load(
                    bench.url, statement, docs, customers, meter_ids, args.connections, now
                )
            await db.execute(f"TRUNCATE {USAGE_TABLES}")
            for load in ("graphql", "replay"):
                await db.execute("CHECKPOINT")
                seconds[load], cpu[load] = await graphql_load(
                    server.url,
                    events,
                    args.batch,
                    args.connections,
                    lambda: backend_pids(db, bench.name),
                    server_pid,
                    expect_new=load == "graphql",
                )
            stored = await db.fetchval("SELECT count(*) FROM usage_events")
            assert stored == len(events), stored
            print(f"round {round_}:")
            for load, label in LOADS.items():
                rates[load].append(len(events) / seconds[load])
                print(f"  {label:<44} {rates[load][-1]:9,.0f} events/s  {cpu[load]}")
            ratio = rates["graphql"][-1] / rates["copy"][-1]
            print(f"  {'ratio GraphQL / COPY in this round':<44} {ratio:9.2f}")
        best = {load: max(found) for load, found in rates.items()}
        print(f"best of {args.rounds} rounds:")
        for load, label in LOADS.items():
            print(f"  {label:<44} {best[load]:9,.0f} events/s")
        per_round = [g / c for g, c in zip(rates["graphql"], rates["copy"], strict=True)]
        print(f"  {'ratio GraphQL / COPY (best rounds)':<44} {best['graphql'] / best['copy']:9.2f}")
        print(
            f"  {'ratio GraphQL / COPY per round':<44} "
            f"{min(per_round):9.2f} to {max(per_round):.2f}"
        )
        print(f"  {'ratio GraphQL / plain INSERT alone':<44} {best['graphql'] / best['sql']:9.2f}")

    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
