"""Crash safety: a real ``billing-gql serve`` is SIGKILLed at a chosen point (the test-only
``BILLING_GQL_CRASHPOINT``, :mod:`billing_gql.crashpoints`) and started again on the same
database. Afterwards every payment is applied exactly once, every renewal issued once, every
outgoing event delivered at least once with the same id, and no usage event lost or doubled."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from billing_helpers import (
    CREATE_METER,
    RECORD,
    USAGE,
    db_rows,
    http_api,
    process_env,
    set_clock,
)

from billing_gql.crashpoints import ENV as CRASHPOINT
from billing_gql.testing import ApiClient, ServerProcess, TestDatabase
from billing_gql_sepay.testing import FakeSePay

START = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)

PLAN = """mutation($i: CreatePlanInput!) { createPlan(input: $i) { plan { id } } }"""
CUSTOMER = """mutation($i: UpsertCustomerInput!) { upsertCustomer(input: $i) {
  customer { id } } }"""
CHECKOUT = """mutation($i: CreateCheckoutInput!) { createCheckout(input: $i) {
  checkout { id bankTransfer { reference } } userErrors { code message } } }"""
COMPLETE = """mutation($id: ID!) { completeManualCheckout(checkoutId: $id) {
  checkout { id status subscription { id currentPeriodEnd } } userErrors { code } } }"""
ADVANCE = """mutation($to: DateTime!) { advanceClock(to: $to) { now userErrors { code } } }"""
ENDPOINT = """mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
  endpoint { id } secret userErrors { code message } } }"""


def plan_input(currency: str, amount: str) -> dict[str, Any]:
    return {
        "code": "pro",
        "name": "Pro",
        "interval": "MONTH",
        "prices": [{"currency": currency, "amount": amount}],
        "features": [{"feature": "seats", "limit": "5"}],
    }


Connect = Callable[[ServerProcess], ApiClient]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``connect(server)``: an API client on a served process, closed after the test."""
    opened: list[ApiClient] = []

    def make(server: ServerProcess) -> ApiClient:
        api = http_api(server.url)
        opened.append(api)
        return api

    yield make
    for api in opened:
        await api.http.aclose()


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 60.0) -> None:
    """Poll ``check`` until it holds (a bound against hanging, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.2)


async def crashes(server: ServerProcess, request: Awaitable[Any]) -> None:
    """``request`` reaches the crash point: the connection drops and the process is gone,
    killed by SIGKILL (-9)."""
    with pytest.raises(httpx.TransportError):
        await request

    async def dead() -> bool:
        return not server.running

    await until(dead, "the server process died")


def killed(server: ServerProcess) -> None:
    assert server.returncode == -9, server.output


async def scalar(db: TestDatabase, sql: str, *args: Any) -> Any:
    rows = await db_rows(db.url, sql, *args)
    return next(iter(rows[0].values()))


# -- a provider delivery: stored, then the process dies -------------------------------------


@pytest.mark.parametrize("point", ["webhook.stored", "webhook.applied"])
async def test_a_delivery_is_applied_exactly_once_across_a_crash(
    clean_database: TestDatabase, connect: Connect, point: str
) -> None:
    fake = FakeSePay()
    env = process_env(
        clean_database.url,
        BILLING_GQL_PLUGINS="sepay",
        BILLING_GQL_ROUTES="VN=sepay",
        BILLING_GQL_WORKER_TICK_SECONDS="1",
        **fake.env(api=False),
    )
    with ServerProcess({**env, CRASHPOINT: point}) as server:
        api = connect(server)
        await api.admin(PLAN, {"i": plan_input("VND", "199000")})
        customer = (await api.admin(CUSTOMER, {"i": {"externalId": "u1", "country": "VN"}}))[
            "upsertCustomer"
        ]["customer"]["id"]
        created = (await api.admin(CHECKOUT, {"i": {"customerId": customer, "planCode": "pro"}}))[
            "createCheckout"
        ]["checkout"]
        delivery = fake.delivery(
            fake.transfer(199000, f"{created['bankTransfer']['reference']} thanh toan")
        )
        await crashes(
            server,
            api.http.post("/webhooks/sepay", content=delivery.body, headers=dict(delivery.headers)),
        )
    killed(server)
    assert await scalar(clean_database, "SELECT count(*) FROM webhook_deliveries") == 1

    # Restarted with its worker: the stored delivery is applied by the retry sweep (when the
    # crash came before), and SePay's retry of it changes nothing.
    with ServerProcess(env, args=()) as server:
        api = connect(server)

        async def applied() -> bool:
            status = await scalar(clean_database, "SELECT status FROM webhook_deliveries")
            return bool(status == "applied")

        await until(applied, "the stored delivery is applied")
        again = await api.http.post(
            "/webhooks/sepay", content=delivery.body, headers=dict(delivery.headers)
        )
        assert again.status_code == 200
    payments = await db_rows(clean_database.url, "SELECT amount_minor, status FROM payments")
    assert payments == [{"amount_minor": 199000, "status": "succeeded"}]
    checkouts = await db_rows(clean_database.url, "SELECT status, amount_paid_minor FROM checkouts")
    assert checkouts == [{"status": "COMPLETED", "amount_paid_minor": 199000}]
    assert await scalar(clean_database, "SELECT count(*) FROM subscriptions") == 1


# -- the renewal sweep: killed between two renewals ---------------------------------------


async def _subscribed(api: ApiClient, count: int) -> datetime:
    """``count`` customers on the monthly plan (manual provider); their period end."""
    await api.admin(PLAN, {"i": plan_input("USD", "29.00")})
    end = START
    for n in range(count):
        customer = (await api.admin(CUSTOMER, {"i": {"externalId": f"r{n}"}}))["upsertCustomer"][
            "customer"
        ]["id"]
        checkout = (
            await api.admin(
                CHECKOUT, {"i": {"customerId": customer, "planCode": "pro", "provider": "manual"}}
            )
        )["createCheckout"]["checkout"]
        done = (await api.admin(COMPLETE, {"id": checkout["id"]}))["completeManualCheckout"]
        end = datetime.fromisoformat(done["checkout"]["subscription"]["currentPeriodEnd"])
    return end


@pytest.mark.parametrize("point", ["renewals.issued@2", "renewal.stored@2"])
async def test_renewals_are_issued_once_across_a_crash_in_the_sweep(
    clean_database: TestDatabase, connect: Connect, point: str
) -> None:
    env = process_env(
        clean_database.url, BILLING_GQL_MANUAL_PROVIDER="1", BILLING_GQL_TEST_CLOCK="1"
    )
    await set_clock(clean_database.url, START)
    with ServerProcess(env) as server:
        period_end = await _subscribed(connect(server), 4)
    due = {"to": (period_end - timedelta(days=1)).isoformat()}
    with ServerProcess({**env, CRASHPOINT: point}) as server:
        api = connect(server)
        await crashes(server, api.gql(ADVANCE, due, admin=True))
    killed(server)
    assert (
        await scalar(clean_database, "SELECT count(*) FROM checkouts WHERE purpose = 'renewal'")
        == 2
    )

    with ServerProcess(env) as server:
        api = connect(server)
        assert (await api.admin(ADVANCE, due))["advanceClock"]["userErrors"] == []
    renewals = await db_rows(
        clean_database.url,
        "SELECT subscription_id, count(*) AS n, bool_and(status = 'OPEN') AS open, "
        "bool_and(prepared_at IS NOT NULL AND session_claim IS NULL) AS prepared "
        "FROM checkouts WHERE purpose = 'renewal' GROUP BY subscription_id",
    )
    assert len(renewals) == 4
    assert all(r["n"] == 1 and r["open"] and r["prepared"] for r in renewals), renewals


# -- an outgoing webhook: answered, then the process dies before marking it ----------------


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A loopback HTTP endpoint on its own thread: its URL and what it received."""
    handler = type("Hook", (_Hook,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_an_outgoing_webhook_is_delivered_again_with_its_id_after_a_crash(
    clean_database: TestDatabase,
    connect: Connect,
) -> None:
    env = process_env(
        clean_database.url,
        BILLING_GQL_MANUAL_PROVIDER="1",
        BILLING_GQL_TEST_CLOCK="1",
        BILLING_GQL_ALLOW_PRIVATE_WEBHOOK_TARGETS="1",
        BILLING_GQL_WORKER_TICK_SECONDS="1",
    )
    await set_clock(clean_database.url, START)
    with receiver() as (url, received):
        with ServerProcess(env) as server:
            api = connect(server)
            endpoint = await api.admin(
                ENDPOINT, {"input": {"url": url, "events": ["customer.*", "checkout.created"]}}
            )
            assert endpoint["createWebhookEndpoint"]["userErrors"] == []
            await api.admin(PLAN, {"i": plan_input("USD", "29.00")})
        # With its worker, which sends the message and dies before recording the 2xx.
        with ServerProcess({**env, CRASHPOINT: "outgoing.sent"}, args=()) as server:
            api = connect(server)
            customer = (await api.admin(CUSTOMER, {"i": {"externalId": "w1"}}))["upsertCustomer"][
                "customer"
            ]["id"]
            checkout = api.gql(
                CHECKOUT,
                {"i": {"customerId": customer, "planCode": "pro", "provider": "manual"}},
                admin=True,
            )
            with contextlib.suppress(httpx.TransportError):
                await checkout  # the worker may be faster than the answer

            async def dead() -> bool:
                return not server.running

            await until(dead, "the server died after sending")
        killed(server)
        first = list(received)
        assert first, "nothing was sent before the crash"
        pending = await scalar(
            clean_database, "SELECT count(*) FROM webhook_messages WHERE status = 'pending'"
        )
        assert pending >= 1

        with ServerProcess(env, args=()) as server:
            api = connect(server)
            # The message's retry falls due on the billing clock.
            await api.admin(ADVANCE, {"to": (START + timedelta(hours=1)).isoformat()})

            async def delivered() -> bool:
                left = await scalar(
                    clean_database,
                    "SELECT count(*) FROM webhook_messages WHERE status <> 'delivered'",
                )
                return bool(left == 0)

            await until(delivered, "every message is delivered")
        messages = await db_rows(clean_database.url, "SELECT event_id FROM webhook_messages")
    ids = [headers["webhook-id"] for headers, _ in received]
    assert {m["event_id"] for m in messages} == set(ids)
    # The one sent before the crash went again, with the same id and body.
    headers, body = first[0]
    again = [b for h, b in received[len(first) :] if h["webhook-id"] == headers["webhook-id"]]
    assert again and all(b == body for b in again)


# -- recordUsage: stored, then the process dies before answering ----------------------------


async def test_usage_is_neither_lost_nor_doubled_when_the_client_retries_after_a_crash(
    clean_database: TestDatabase,
    connect: Connect,
) -> None:
    env = process_env(clean_database.url)
    with ServerProcess(env) as server:
        api = connect(server)
        await api.admin(
            CREATE_METER,
            {"input": {"code": "calls", "name": "Calls", "aggregation": "SUM"}},
        )
        customer = (await api.admin(CUSTOMER, {"i": {"externalId": "m1"}}))["upsertCustomer"][
            "customer"
        ]["id"]

    def batch(count: int) -> dict[str, Any]:
        return {
            "input": {
                "events": [
                    {
                        "id": str(uuid.uuid4()),
                        "meter": "calls",
                        "customerId": customer,
                        "value": "2",
                    }
                    for _ in range(count)
                ]
            }
        }

    first = batch(50)
    with ServerProcess({**env, CRASHPOINT: "usage.stored"}) as server:
        api = connect(server)
        await crashes(server, api.gql(RECORD, first, admin=True))
    killed(server)

    with ServerProcess(env) as server:
        api = connect(server)
        retried = (await api.admin(RECORD, first))["recordUsage"]
        assert (retried["accepted"], retried["duplicates"]) == (0, 50)
        second = (await api.admin(RECORD, batch(25)))["recordUsage"]
        assert (second["accepted"], second["duplicates"]) == (25, 0)
        total = (await api.admin(USAGE, {"c": customer, "m": "calls"}))["usage"]
    assert await scalar(clean_database, "SELECT count(*) FROM usage_events") == 75
    assert total["value"] == "150"
