"""Webhook bursts: signed Stripe deliveries through ``POST /webhooks/stripe`` against the same
rows written by raw asyncpg.

Run from a checkout (one command; it creates and drops its own database)::

    .venv/bin/python bench/webhook_ingest.py          # DATABASE_URL's server, or embedded

A provider back from an outage sends its backlog at once: here ``invoice.paid`` events (a
renewal paid for one of 1,000 Stripe subscriptions), 30 % of them sent again (the same event
id, body and signature, as Stripe retries do), shuffled. Every delivery is signed the way
Stripe signs (``Stripe-Signature: t=…,v1=HMAC-SHA256``) before timing.

1. ``billing-gql serve --no-worker`` (the Stripe plugin configured; its API is never called
   for these events) receives them from 16 keep-alive connections (autocannon, installed
   into bench/node on first run): each is verified on the raw body, stored by (provider,
   event id), parsed and applied in one transaction (the subscription locked, the payment
   recorded, the delivery marked applied); a repeat answers 200 and changes nothing.
2. The baseline writes the same rows from 16 asyncpg connections, one transaction per
   delivery: the delivery row ``INSERT … ON CONFLICT DO NOTHING``, and for a new one the
   subscription locked, the payment inserted, the customer's Stripe id remembered and the
   delivery marked applied.

Both end with the same counts (checked). It prints deliveries/s of each, the ratio (goal
≥ 0.3) and whether the server reached 1,000 deliveries/s. ``--rounds`` runs both loads that
many times (the tables emptied in between) and takes each one's best. Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from billing_gql.testing.database import TestDatabase
from billing_gql.testing.server import ServerProcess

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
SECRET = "whsec_bench_secret"
SUBSCRIPTIONS = 1_000
CONNECTIONS = 16
DUPLICATES = 0.30
TABLES = "webhook_deliveries, payments, customer_provider_accounts"


def ensure_loadgen() -> None:
    if shutil.which("node") is None:
        sys.exit("this benchmark needs Node.js (for autocannon)")
    if not (NODE_DIR / "node_modules" / "autocannon").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=True,
        )


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
            "INSERT INTO customers (external_id, created_at, updated_at) "
            "SELECT 'usr_' || g, now(), now() FROM generate_series(1, $1) g",
            SUBSCRIPTIONS,
        )
        await conn.execute(
            "INSERT INTO subscriptions (customer_id, plan_id, provider, provider_subscription_id, "
            "status, currency, quantity, current_period_start, current_period_end, "
            "cancel_at_period_end, created_at, updated_at) "
            "SELECT id, $1, 'stripe', 'sub_' || substr(external_id, 5), 'ACTIVE', 'USD', 1, "
            "now(), now() + interval '30 days', false, now(), now() FROM customers",
            plan_id,
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def invoice_paid(n: int, created: int) -> dict[str, Any]:
    sub = random.randint(1, SUBSCRIPTIONS)
    return {
        "id": f"evt_bench_{n:07d}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created,
        "livemode": False,
        "type": "invoice.paid",
        "data": {
            "object": {
                "id": f"in_bench_{n:07d}",
                "object": "invoice",
                "customer": f"cus_bench_{sub}",
                "currency": "usd",
                "amount_paid": 2900,
                "amount_due": 2900,
                "attempt_count": 1,
                "billing_reason": "subscription_cycle",
                "status": "paid",
                "status_transitions": {"paid_at": created},
                "parent": {
                    "type": "subscription_details",
                    "subscription_details": {"subscription": f"sub_{sub}", "metadata": {}},
                },
            }
        },
    }


def deliveries(total: int) -> list[dict[str, Any]]:
    """``total`` signed deliveries, ``DUPLICATES`` of them repeats of earlier ones, shuffled
    (a repeat may overtake its original, as with a real provider)."""
    unique = round(total * (1 - DUPLICATES))
    now = int(time.time())
    out = []
    for n in range(unique):
        body = json.dumps(invoice_paid(n, now - unique + n), separators=(",", ":"))
        mac = hmac.new(SECRET.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
        out.append({"body": body, "headers": {"stripe-signature": f"t={now},v1={mac}"}})
    out += [random.choice(out[:unique]) for _ in range(total - unique)]
    random.shuffle(out)
    return out


def through_http(url: str, items: list[dict[str, Any]]) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(items, handle)
    try:
        out = subprocess.run(
            [
                "node",
                str(NODE_DIR / "deliveries.mjs"),
                f"{url}/webhooks/stripe",
                handle.name,
                str(CONNECTIONS),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        Path(handle.name).unlink()
    result = json.loads(out.strip().splitlines()[-1])
    if result["non2xx"] or result["errors"] or result["requests"] != len(items):
        sys.exit(f"webhook load had failures: {result}")
    return len(items) / float(result["seconds"])


_STORE = (
    "INSERT INTO webhook_deliveries (provider, event_id, event_type, status, attempts, body, "
    "headers, occurred_at, received_at, next_attempt_at) "
    "VALUES ('stripe', $1, 'invoice.paid', 'received', 0, $2, '{}'::jsonb, $3, now(), now()) "
    "ON CONFLICT (provider, event_id) DO NOTHING RETURNING id"
)
_LOCK = (
    "SELECT id, customer_id FROM subscriptions WHERE provider = 'stripe' "
    "AND provider_subscription_id = $1 FOR UPDATE"
)
_PAY = (
    "INSERT INTO payments (provider, provider_ref, status, amount_minor, refunded_minor, "
    "currency, customer_id, subscription_id, details, received_at, created_at) "
    "VALUES ('stripe', $1, 'succeeded', $2, 0, 'USD', $3, $4, $5::jsonb, $6, now()) "
    "ON CONFLICT (provider, provider_ref) DO NOTHING"
)
_LEARN = (
    "INSERT INTO customer_provider_accounts (customer_id, provider, provider_customer_id, "
    "created_at) VALUES ($1, 'stripe', $2, now()) ON CONFLICT DO NOTHING"
)
_APPLIED = (
    "UPDATE webhook_deliveries SET status = 'applied', attempts = attempts + 1, "
    "applied_at = now(), next_attempt_at = NULL WHERE id = $1"
)


async def through_asyncpg(url: str, items: list[dict[str, Any]]) -> float:
    """The same rows, written straight: the parsing done before timing."""
    parsed = []
    for item in items:
        event = json.loads(item["body"])
        invoice = event["data"]["object"]
        parsed.append(
            (
                event["id"],
                item["body"].encode(),
                time.time(),
                invoice["id"],
                invoice["amount_paid"],
                invoice["parent"]["subscription_details"]["subscription"],
                invoice["customer"],
            )
        )
    pool = await asyncpg.create_pool(url, min_size=CONNECTIONS, max_size=CONNECTIONS)
    queue = iter(parsed)

    async def worker() -> None:
        for event_id, body, created, invoice_id, amount, sub_ref, cus in queue:
            when = datetime.fromtimestamp(created, UTC)
            async with pool.acquire() as conn, conn.transaction():
                delivery = await conn.fetchval(_STORE, event_id, body, when)
                if delivery is None:
                    continue
                sub = await conn.fetchrow(_LOCK, sub_ref)
                details = json.dumps(
                    {"invoice": invoice_id, "billing_reason": "subscription_cycle"}
                )
                await conn.execute(
                    _PAY, invoice_id, amount, sub["customer_id"], sub["id"], details, when
                )
                await conn.execute(_LEARN, sub["customer_id"], cus)
                await conn.execute(_APPLIED, delivery)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        return len(items) / (time.perf_counter() - started)
    finally:
        await pool.close()


async def counts(url: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM webhook_deliveries), "
            "(SELECT count(*) FROM webhook_deliveries WHERE status = 'applied'), "
            "(SELECT count(*) FROM payments)"
        )
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])
    finally:
        await conn.close()


async def empty(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"TRUNCATE {TABLES}")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ensure_loadgen()
    random.seed(20)
    database = TestDatabase()
    database.start()
    try:
        asyncio.run(seed(database.url))
        env = {
            "DATABASE_URL": database.url,
            "BILLING_GQL_ADMIN_KEYS": "bench-admin-key",
            "BILLING_GQL_PLUGINS": "stripe",
            "BILLING_GQL_STRIPE_API_KEY": "sk_test_bench",
            "BILLING_GQL_STRIPE_WEBHOOK_SECRET": SECRET,
            # Never called for these events; a closed loopback port if it were.
            "BILLING_GQL_STRIPE_API_BASE": "http://127.0.0.1:9",
        }
        http_rates: list[float] = []
        raw_rates: list[float] = []
        expected: tuple[int, int, int] | None = None
        with ServerProcess(env) as server:
            through_http(server.url, deliveries(300))  # warm-up
            asyncio.run(empty(database.url))
            for _ in range(args.rounds):
                items = deliveries(args.deliveries)
                unique = len({item["body"] for item in items})
                expected = (unique, unique, unique)
                http_rates.append(through_http(server.url, items))
                found = asyncio.run(counts(database.url))
                if found != expected:
                    sys.exit(f"through HTTP: rows {found}, expected {expected}")
                asyncio.run(empty(database.url))
                raw_rates.append(asyncio.run(through_asyncpg(database.url, items)))
                found = asyncio.run(counts(database.url))
                if found != expected:
                    sys.exit(f"through asyncpg: rows {found}, expected {expected}")
                asyncio.run(empty(database.url))
    finally:
        database.stop()
    http, raw = max(http_rates), max(raw_rates)
    print(
        f"deliveries per round: {args.deliveries} ({DUPLICATES:.0%} repeats), "
        f"{CONNECTIONS} connections"
    )
    print(f"POST /webhooks/stripe (verify, store, apply): {http:8.0f} deliveries/s")
    print(f"raw asyncpg, the same rows:                   {raw:8.0f} deliveries/s")
    print(f"ratio HTTP / raw asyncpg (goal >= 0.3): {http / raw:.2f}")
    print(f"1,000 deliveries/s: {'met' if http >= 1000 else 'NOT met'}")


if __name__ == "__main__":
    main()
