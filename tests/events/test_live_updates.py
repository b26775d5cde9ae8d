"""``checkoutUpdated`` across two real server processes on one database: a client subscribed on
one sees a checkout completed (or expired) through the other, over graphql-transport-ws."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest
from billing_helpers import (
    START,
    advance,
    http_api,
    make_customer,
    make_usd_plan,
    process_env,
    session_for,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from billing_gql.testing import ADMIN_KEY, ApiClient, ServerProcess
from billing_gql.testing.database import TestDatabase

PROTOCOL = "graphql-transport-ws"
# Generous, yet below the listener's 30 s safety re-read: an update must come from NOTIFY.
WAIT = 20.0
UPDATES = """subscription($id: ID!) { checkoutUpdated(checkoutId: $id) {
  id status amountPaid { amount currency } subscription { id status } } }"""
COMPLETE = """mutation($id: ID!) { completeManualCheckout(checkoutId: $id) {
  checkout { id status } userErrors { field message code } } }"""


@pytest.fixture(scope="module")
def servers(billing_database: TestDatabase) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two ``billing-gql serve`` processes: one API-only, one also running the worker."""
    env = process_env(
        billing_database.url, BILLING_GQL_MANUAL_PROVIDER="1", BILLING_GQL_TEST_CLOCK="1"
    )
    with (
        ServerProcess(env) as first,
        ServerProcess(env, args=()) as second,
    ):
        yield first, second


@pytest.fixture
async def apis(
    servers: tuple[ServerProcess, ServerProcess], clean_database: TestDatabase
) -> AsyncIterator[tuple[ApiClient, ApiClient, str]]:
    """Clients of both servers, and the first one's WebSocket URL."""
    first, second = servers
    assert first.url and second.url
    one, two = http_api(first.url), http_api(second.url)
    try:
        yield one, two, first.url.replace("http://", "ws://") + "/graphql"
    finally:
        await one.http.aclose()
        await two.http.aclose()


async def recv(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    return message


@asynccontextmanager
async def session(url: str, token: str | None) -> AsyncIterator[ClientConnection]:
    async with connect(url, subprotocols=[PROTOCOL]) as ws:
        payload = {"authorization": f"Bearer {token}"} if token else {}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert await recv(ws) == {"type": "connection_ack"}
        yield ws


async def watch(ws: ClientConnection, checkout_id: str, op_id: str = "1") -> None:
    await ws.send(
        json.dumps(
            {
                "id": op_id,
                "type": "subscribe",
                "payload": {"query": UPDATES, "variables": {"id": checkout_id}},
            }
        )
    )


async def open_checkout(api: ApiClient, customer_id: str, token: str) -> dict[str, Any]:
    result = await api.gql(
        """mutation($input: CreateCheckoutInput!) { createCheckout(input: $input) {
             checkout { id status expiresAt } userErrors { field message code } } }""",
        {"input": {"customerId": customer_id, "planCode": "pro", "provider": "manual"}},
        token=token,
    )
    checkout: dict[str, Any] = result.ok()["createCheckout"]["checkout"]
    return checkout


async def test_a_completion_through_one_process_reaches_a_subscriber_on_the_other(
    apis: tuple[ApiClient, ApiClient, str],
) -> None:
    one, two, ws_url = apis
    await make_usd_plan(one, "pro")
    customer = await make_customer(one, "ann")
    token = await session_for(one, customer)
    checkout = await open_checkout(one, customer, token)

    async with session(ws_url, token) as ws:
        await watch(ws, checkout["id"])
        first = await recv(ws)
        assert first == {
            "type": "next",
            "id": "1",
            "payload": {
                "data": {
                    "checkoutUpdated": {
                        "id": checkout["id"],
                        "status": "OPEN",
                        "amountPaid": {"amount": "0.00", "currency": "USD"},
                        "subscription": None,
                    }
                }
            },
        }
        done = (await two.gql(COMPLETE, {"id": checkout["id"]}, admin=True)).ok()
        assert done["completeManualCheckout"]["checkout"]["status"] == "COMPLETED"

        update = await recv(ws)
        assert update["type"] == "next", update
        state = update["payload"]["data"]["checkoutUpdated"]
        assert state["status"] == "COMPLETED"
        assert state["amountPaid"] == {"amount": "29.00", "currency": "USD"}
        assert state["subscription"]["status"] == "ACTIVE"
        # A terminal status ends the stream.
        assert await recv(ws) == {"type": "complete", "id": "1"}


async def test_an_expiry_by_the_clock_on_the_other_process_ends_the_stream(
    apis: tuple[ApiClient, ApiClient, str],
) -> None:
    one, two, ws_url = apis
    await advance(two, START)
    await make_usd_plan(one, "pro")
    customer = await make_customer(one, "bob")
    token = await session_for(one, customer)
    checkout = await open_checkout(one, customer, token)

    async with session(ws_url, ADMIN_KEY) as ws:
        await watch(ws, checkout["id"], "exp")
        assert (await recv(ws))["payload"]["data"]["checkoutUpdated"]["status"] == "OPEN"
        await advance(two, datetime.fromisoformat(checkout["expiresAt"]))
        update = await recv(ws)
        assert update["payload"]["data"]["checkoutUpdated"]["status"] == "EXPIRED"
        assert await recv(ws) == {"type": "complete", "id": "exp"}


async def test_who_may_subscribe(apis: tuple[ApiClient, ApiClient, str]) -> None:
    one, two, ws_url = apis
    await make_usd_plan(one, "pro")
    ann = await make_customer(one, "ann")
    bob = await make_customer(one, "bob")
    ann_token = await session_for(one, ann)
    bob_token = await session_for(one, bob)
    checkout = await open_checkout(one, ann, ann_token)

    for token, code in (
        (bob_token, "FORBIDDEN"),
        (None, "UNAUTHENTICATED"),
        ("not-a-token", "UNAUTHENTICATED"),
    ):
        async with session(ws_url, token) as ws:
            await watch(ws, checkout["id"])
            error = await recv(ws)
            assert error["type"] == "error", error
            assert [e["extensions"]["code"] for e in error["payload"]] == [code]
    async with session(ws_url, bob_token) as ws:
        # Another customer's token learns nothing, even about ids that do not exist.
        await watch(ws, "00000000-0000-0000-0000-000000000000")
        assert [e["extensions"]["code"] for e in (await recv(ws))["payload"]] == ["FORBIDDEN"]
    async with session(ws_url, ADMIN_KEY) as ws:
        await watch(ws, "00000000-0000-0000-0000-000000000000")
        assert [e["extensions"]["code"] for e in (await recv(ws))["payload"]] == ["NOT_FOUND"]

    # A checkout already terminal: its state, then the end of the stream.
    await two.gql(COMPLETE, {"id": checkout["id"]}, admin=True)
    async with session(ws_url, ann_token) as ws:
        await watch(ws, checkout["id"])
        state = (await recv(ws))["payload"]["data"]["checkoutUpdated"]
        assert state["status"] == "COMPLETED"
        assert await recv(ws) == {"type": "complete", "id": "1"}


async def test_operation_ids_are_unique_while_running_and_complete_stops_one(
    apis: tuple[ApiClient, ApiClient, str],
) -> None:
    one, _, ws_url = apis
    await make_usd_plan(one, "pro")
    customer = await make_customer(one, "cat")
    token = await session_for(one, customer)
    checkout = await open_checkout(one, customer, token)

    async with session(ws_url, token) as ws:
        await watch(ws, checkout["id"], "a")
        assert (await recv(ws))["id"] == "a"
        # The client stops it; the id is free again, and a new one starts from the top.
        await ws.send(json.dumps({"id": "a", "type": "complete"}))
        await watch(ws, checkout["id"], "a")
        assert (await recv(ws))["payload"]["data"]["checkoutUpdated"]["status"] == "OPEN"
        # A second operation under a running one's id is a protocol error.
        await watch(ws, checkout["id"], "a")
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4409
