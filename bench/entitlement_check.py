"""The hot path: `entitlement(externalCustomerId, feature)` through GraphQL, against baselines.

Run from a checkout (one command; it creates and drops its own database)::

    .venv/bin/python bench/entitlement_check.py            # DATABASE_URL's server, or embedded

It seeds 10,000 customers with live subscriptions, then measures requests/s with autocannon
(16 connections, installed into bench/node on first run) against four endpoints in two
processes (the baselines' and ``billing-gql serve``), each one uvicorn process with one worker
on the same database, run one after the other:

1. a plain Litestar route running ``SELECT 1`` on an asyncpg pool (the floor of any request);
2. a plain Litestar route calling the same entitlement service the resolver calls (the SQL);
3. ``billing-gql serve``: ``POST /graphql`` with the ``entitlement`` query and an admin key,
   alternating (``--rounds``, medians) with the same server's ``GET /healthz`` (a ``SELECT 1``
   on its pool): the goal is a ratio query / healthz of at least 1.0, which only the
   entitlement cache reaches (``--cache-size 0`` gives the uncached figure); then with a scoped
   API key (``entitlements:read``: its row is read on each request, so revocation acts at
   once, and the answer comes from the cache);
4. for reference, Strawberry's stock Litestar controller (parser and validation caches on) on
   the same schema and resolvers, in the baseline process.

Before loading an endpoint it checks one answer (a GraphQL error also comes with status 200,
which autocannon would count as a success). It prints each rate and the ratios (3 / 2: the
GraphQL layer's cost; 2 / 1: the lookup's cost; scoped key / admin key: the key lookup's
cost). Absolute figures drift with the machine; the
ratios are what to compare. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import httpx

from billing_gql.testing.database import TestDatabase
from billing_gql.testing.server import ServerProcess

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
ADMIN_KEY = "bench-admin-key"
CUSTOMERS = 10_000
QUERY = (
    'query($c: String!) { entitlement(externalCustomerId: $c, feature: "seats") '
    "{ enabled limit used remaining } }"
)

# A plain Litestar app: the baselines. Served by uvicorn exactly like billing-gql serve.
BASELINE_APP = textwrap.dedent(
    """
    import asyncio, os, socket, sys
    import uvicorn
    from litestar import Litestar, get
    from strawberry.extensions import ParserCache, ValidationCache
    from strawberry.litestar import BaseContext, make_graphql_controller
    from billing_gql.clock import Clock
    from billing_gql.db.database import Database
    from billing_gql.entitlements.service import entitlement
    from billing_gql.graphql.context import ADMIN
    from billing_gql.graphql.schema import build_schema
    from billing_gql.runtime import Runtime
    from billing_gql.settings import Settings

    state = {}

    async def startup() -> None:
        state["db"] = await Database.connect(os.environ["DATABASE_URL"], max_size=10)
        state["clock"] = Clock(state["db"])
        state["runtime"] = await Runtime.start(Settings.from_env(), apply_migrations=False)

    @get("/select1")
    async def select1() -> dict:
        return {"one": await state["db"].pool.fetchval("SELECT 1")}

    @get("/entitlement/{external_id:str}")
    async def check(external_id: str) -> dict:
        _, value = await entitlement(state["db"].pool, feature="seats",
                                     now=state["clock"].now, external_id=external_id)
        return {"enabled": value.enabled, "limit": str(value.limit), "used": str(value.used)}

    # Strawberry's stock controller on the same schema and resolvers, with its parser and
    # validation caches: what billing-gql's own /graphql endpoint replaces.
    stock_schema = build_schema()
    stock_schema.extensions = [ParserCache(), ValidationCache()]

    import msgspec
    from typing import Any

    class StockContext(BaseContext, kw_only=True):
        # Strawberry's controller wants a BaseContext: give it our Context's fields.
        runtime: Any
        viewer: Any
        loaders: dict = msgspec.field(default_factory=dict)
        precomputed: dict = msgspec.field(default_factory=dict)

    async def stock_context() -> StockContext:
        return StockContext(runtime=state["runtime"], viewer=ADMIN)

    Stock = make_graphql_controller(stock_schema, path="/stock", graphql_ide=None,
                                    context_getter=stock_context)

    app = Litestar([select1, check, Stock], on_startup=[startup], openapi_config=None,
                   logging_config=None)

    async def main() -> None:
        # IPPROTO_TCP so asyncio sets TCP_NODELAY, exactly as billing-gql serve does.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.02)
        sys.stdout.write(f"listening on http://127.0.0.1:{sock.getsockname()[1]}\\n")
        sys.stdout.flush()
        await task

    asyncio.run(main())
    """
)


# What usr_42 is entitled to (the seeded plan: 5 seats), as the plain route and GraphQL say it.
ROUTE_ANSWER = {"enabled": True, "limit": "5", "used": "0"}
GRAPHQL_ANSWER = {
    "data": {"entitlement": {"enabled": True, "limit": "5", "used": "0", "remaining": "5"}}
}


def expect(url: str, answer: object, headers: dict[str, str] | None = None, body: str = "") -> None:
    """One request first: the load only counts statuses, so check what the endpoint answers."""
    method = "POST" if body else "GET"
    response = httpx.request(method, url, headers=headers, content=body or None, timeout=10)
    if response.status_code != 200 or response.json() != answer:
        sys.exit(f"{url} answered {response.status_code} {response.text!r}, not {answer!r}")


def scoped_key(url: str) -> str:
    """A new API key with the entitlements:read scope (made by the admin key)."""
    response = httpx.post(
        f"{url}/graphql",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        json={
            "query": 'mutation { createApiKey(input: {name: "bench", scopes: [ENTITLEMENTS_READ]}) '
            "{ secret } }"
        },
        timeout=10,
    )
    secret: str = response.json()["data"]["createApiKey"]["secret"]
    return secret


def ensure_loadgen() -> None:
    if shutil.which("node") is None:
        sys.exit("this benchmark needs Node.js (for autocannon)")
    if not (NODE_DIR / "node_modules" / "autocannon").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=True,
        )


def load(
    url: str,
    seconds: int,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str = "",
) -> dict[str, float]:
    out = subprocess.run(
        [
            "node",
            str(NODE_DIR / "load.mjs"),
            url,
            str(seconds),
            "16",
            method,
            json.dumps(headers or {}),
            body,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    if result["non2xx"] or result["errors"]:
        sys.exit(f"load against {url} had failures: {result}")
    return result


async def seed(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        plan_id = await conn.fetchval(
            "INSERT INTO plans (code, name, interval, interval_count, trial_days, archived, "
            "created_at, updated_at) VALUES ('pro', 'Pro', 'MONTH', 1, 0, false, now(), now()) "
            "RETURNING id"
        )
        await conn.execute(
            "INSERT INTO plan_prices (plan_id, currency, amount_minor, position) "
            "VALUES ($1, 'USD', 2900, 0)",
            plan_id,
        )
        await conn.execute(
            "INSERT INTO plan_features (plan_id, feature, enabled, limit_value, position) "
            "VALUES ($1, 'seats', true, 5, 0), ($1, 'sso', true, NULL, 1)",
            plan_id,
        )
        await conn.execute(
            "INSERT INTO customers (external_id, created_at, updated_at) "
            "SELECT 'usr_' || g, now(), now() FROM generate_series(1, $1) g",
            CUSTOMERS,
        )
        await conn.execute(
            "INSERT INTO subscriptions (customer_id, plan_id, provider, status, currency, "
            "quantity, current_period_start, current_period_end, cancel_at_period_end, "
            "created_at, updated_at) SELECT id, $1, 'manual', 'ACTIVE', 'USD', 1, now(), "
            "now() + interval '30 days', false, now(), now() FROM customers",
            plan_id,
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each load")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating /healthz and query loads (medians)"
    )
    parser.add_argument(
        "--cache-size",
        default=None,
        help="BILLING_GQL_ENTITLEMENT_CACHE_SIZE for the server (0: the uncached figure)",
    )
    args = parser.parse_args()
    ensure_loadgen()
    database = TestDatabase()
    database.start()
    try:
        asyncio.run(seed(database.url))
        env = {"DATABASE_URL": database.url, "BILLING_GQL_ADMIN_KEYS": ADMIN_KEY}
        if args.cache_size is not None:
            env["BILLING_GQL_ENTITLEMENT_CACHE_SIZE"] = args.cache_size
        results: dict[str, float] = {}
        baseline = subprocess.Popen(
            [sys.executable, "-c", BASELINE_APP],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert baseline.stdout is not None
            base_url = baseline.stdout.readline().strip().removeprefix("listening on ")
            expect(f"{base_url}/select1", {"one": 1})
            load(f"{base_url}/select1", 2)  # warm-up
            results["select1"] = load(f"{base_url}/select1", args.seconds)["requests_per_sec"]
            body = json.dumps({"query": QUERY, "variables": {"c": "usr_42"}})
            json_headers = {"content-type": "application/json"}
            expect(f"{base_url}/stock", GRAPHQL_ANSWER, json_headers, body)
            check = load(f"{base_url}/stock", 2, "POST", json_headers, body)
            assert check["total"] > 0
            results["stock"] = load(f"{base_url}/stock", args.seconds, "POST", json_headers, body)[
                "requests_per_sec"
            ]
            expect(f"{base_url}/entitlement/usr_42", ROUTE_ANSWER)
            load(f"{base_url}/entitlement/usr_42", 2)
            results["route"] = load(f"{base_url}/entitlement/usr_42", args.seconds)[
                "requests_per_sec"
            ]
        finally:
            baseline.terminate()
            baseline.wait()
        with ServerProcess(env) as server:
            body = json.dumps({"query": QUERY, "variables": {"c": "usr_42"}})
            headers = {"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}"}
            expect(f"{server.url}/healthz", {"status": "ok"})
            expect(f"{server.url}/graphql", GRAPHQL_ANSWER, headers, body)
            load(f"{server.url}/healthz", 2)  # warm-up
            check = load(f"{server.url}/graphql", 2, "POST", headers, body)
            assert check["total"] > 0
            # The goal's baseline: the same server's GET /healthz (a SELECT 1 on its pool),
            # measured in alternating rounds with the query so drift hits both alike.
            healthz: list[float] = []
            graphql: list[float] = []
            for _ in range(args.rounds):
                healthz.append(load(f"{server.url}/healthz", args.seconds)["requests_per_sec"])
                graphql.append(
                    load(f"{server.url}/graphql", args.seconds, "POST", headers, body)[
                        "requests_per_sec"
                    ]
                )
            results["healthz"] = statistics.median(healthz)
            results["graphql"] = statistics.median(graphql)
            # The same with a scoped API key (entitlements:read): its row is read per request.
            scoped = {**headers, "authorization": f"Bearer {scoped_key(server.url)}"}
            expect(f"{server.url}/graphql", GRAPHQL_ANSWER, scoped, body)
            load(f"{server.url}/graphql", 2, "POST", scoped, body)
            results["scoped"] = load(f"{server.url}/graphql", args.seconds, "POST", scoped, body)[
                "requests_per_sec"
            ]
    finally:
        database.stop()
    print(f"plain route, SELECT 1:            {results['select1']:8.0f} req/s")
    print(f"plain route, entitlement service: {results['route']:8.0f} req/s")
    print(f"billing-gql GET /healthz:         {results['healthz']:8.0f} req/s")
    print(f"GraphQL entitlement query:        {results['graphql']:8.0f} req/s")
    print(f"  with an entitlements:read key:  {results['scoped']:8.0f} req/s")
    print(f"  (Strawberry's stock controller:  {results['stock']:8.0f} req/s)")
    print(
        f"ratio GraphQL entitlement query / GET /healthz (same server; goal >= 1.0): "
        f"{results['graphql'] / results['healthz']:.2f}"
    )
    print(f"ratio GraphQL / plain entitlement route: {results['graphql'] / results['route']:.2f}")
    print(f"ratio plain entitlement route / SELECT 1: {results['route'] / results['select1']:.2f}")
    print(f"ratio scoped key / bootstrap admin key: {results['scoped'] / results['graphql']:.2f}")
    print(
        f"ratio stock Strawberry controller / plain entitlement route: "
        f"{results['stock'] / results['route']:.2f}"
    )


if __name__ == "__main__":
    main()
