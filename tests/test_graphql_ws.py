"""The graphql-transport-ws protocol on ``GET /graphql`` of a real ``billing-gql serve``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from timework_support import (
    ServerProcess,
    http_api,
    make_customer,
    make_plan,
    process_env,
    server_process,
    session_for,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from billing_gql.testing import ADMIN_KEY
from billing_gql.testing.database import TestDatabase

PROTOCOL = "graphql-transport-ws"


@pytest.fixture(scope="module")
def server(billing_database: TestDatabase) -> Iterator[ServerProcess]:
    env = process_env(billing_database.url, BILLING_GQL_MANUAL_PROVIDER="1")
    with server_process(["serve", "--port", "0", "--no-worker"], env) as process:
        yield process


@pytest.fixture
async def ws_url(server: ServerProcess, clean_database: TestDatabase) -> str:
    await server.wait_ready()
    assert server.url is not None
    return server.url.replace("http://", "ws://") + "/graphql"


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def recv(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def closed_code(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code


async def acked(ws: ClientConnection, payload: dict[str, Any] | None = None) -> None:
    await send(ws, {"type": "connection_init", "payload": payload or {}})
    assert await recv(ws) == {"type": "connection_ack"}


async def test_query_over_websocket_with_ping(ws_url: str) -> None:
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        assert ws.subprotocol == PROTOCOL
        await acked(ws, {"authorization": f"Bearer {ADMIN_KEY}"})
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}
        await send(ws, {"id": "1", "type": "subscribe", "payload": {"query": "{ plans { code } }"}})
        assert await recv(ws) == {"type": "next", "id": "1", "payload": {"data": {"plans": []}}}
        assert await recv(ws) == {"type": "complete", "id": "1"}


async def test_auth_errors_are_coded_per_operation(ws_url: str) -> None:
    query = {"query": "{ webhookEndpoints { id } }"}
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        await acked(ws, {"authorization": "Bearer not-a-real-token"})
        await send(ws, {"id": "a", "type": "subscribe", "payload": query})
        result = await recv(ws)
        assert result["type"] == "next"
        codes = [e["extensions"]["code"] for e in result["payload"]["errors"]]
        assert codes == ["UNAUTHENTICATED"]
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        await acked(ws)
        await send(ws, {"id": "a", "type": "subscribe", "payload": query})
        result = await recv(ws)
        assert [e["extensions"]["code"] for e in result["payload"]["errors"]] == ["UNAUTHENTICATED"]


async def test_limits_apply_as_on_http(ws_url: str) -> None:
    nested = "{ plans { charges { tiers { upTo } } } }"
    aliases = "query { " + " ".join(f"a{i}: __typename" for i in range(101)) + " }"
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        await acked(ws, {"authorization": f"Bearer {ADMIN_KEY}"})
        await send(ws, {"id": "ok", "type": "subscribe", "payload": {"query": nested}})
        assert (await recv(ws))["type"] == "next"
        assert (await recv(ws))["type"] == "complete"
        await send(ws, {"id": "x", "type": "subscribe", "payload": {"query": aliases}})
        error = await recv(ws)
        assert error["type"] == "error" and error["id"] == "x"
        assert [e["extensions"]["code"] for e in error["payload"]] == ["GRAPHQL_VALIDATION_FAILED"]
        tokens = "{ " + "__typename " * 5001 + "}"
        await send(ws, {"id": "y", "type": "subscribe", "payload": {"query": tokens}})
        error = await recv(ws)
        assert [e["extensions"]["code"] for e in error["payload"]] == ["GRAPHQL_VALIDATION_FAILED"]


async def test_protocol_violations_close_with_their_codes(ws_url: str) -> None:
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        await send(ws, {"id": "1", "type": "subscribe", "payload": {"query": "{ plans { code } }"}})
        assert await closed_code(ws) == 4401  # subscribe before connection_init
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        await acked(ws)
        await send(ws, {"type": "connection_init"})
        assert await closed_code(ws) == 4429
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        await ws.send("not json")
        assert await closed_code(ws) == 4400
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        # NaN is not JSON: refused as on HTTP, not handed to GraphQL as a float.
        await acked(ws, {"authorization": f"Bearer {ADMIN_KEY}"})
        query = "query($c: String!) { plan(code: $c) { code } }"
        payload = {"query": query, "variables": {"c": float("nan")}}
        await send(ws, {"id": "1", "type": "subscribe", "payload": payload})  # writes NaN
        assert await asyncio.wait_for(closed_code(ws), 10) == 4400
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        await acked(ws)
        await send(ws, {"type": "what"})
        assert await closed_code(ws) == 4400


async def test_the_subprotocol_is_required(ws_url: str) -> None:
    with pytest.raises(InvalidStatus):
        async with connect(ws_url, subprotocols=["graphql-ws"]):  # type: ignore[list-item]
            pass


async def test_a_stream_ends_when_its_customer_session_expires(
    server: ServerProcess, ws_url: str, clean_database: TestDatabase
) -> None:
    assert server.url is not None
    api = http_api(server.url)
    try:
        await make_plan(api, "pro")
        customer = await make_customer(api, "ws_expiring")
        token = await session_for(api, customer["id"])
        created = await api.gql(
            """mutation($input: CreateCheckoutInput!) { createCheckout(input: $input) {
                 checkout { id } userErrors { code } } }""",
            {"input": {"customerId": customer["id"], "planCode": "pro", "provider": "manual"}},
            token=token,
        )
        checkout_id = created.ok()["createCheckout"]["checkout"]["id"]
    finally:
        await api.http.aclose()
    # The session has a minute at least; here it runs out two seconds from now.
    conn = await asyncpg.connect(clean_database.url)
    try:
        await conn.execute("UPDATE customer_sessions SET expires_at = now() + interval '2 s'")
    finally:
        await conn.close()
    updates = "subscription($id: ID!) { checkoutUpdated(checkoutId: $id) { id status } }"
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        await acked(ws, {"authorization": f"Bearer {token}"})
        query = {"query": updates, "variables": {"id": checkout_id}}
        await send(ws, {"id": "s", "type": "subscribe", "payload": query})
        first = await recv(ws)
        assert first["payload"]["data"]["checkoutUpdated"]["status"] == "OPEN"
        ended = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert ended["type"] == "error" and ended["id"] == "s"
        assert [e["extensions"]["code"] for e in ended["payload"]] == ["UNAUTHENTICATED"]
        assert await asyncio.wait_for(closed_code(ws), 15) == 4401


@pytest.fixture(scope="module")
def impatient_server(billing_database: TestDatabase) -> Iterator[ServerProcess]:
    env = process_env(billing_database.url, BILLING_GQL_WS_INIT_TIMEOUT_SECONDS="0.3")
    with server_process(["serve", "--port", "0", "--no-worker"], env) as process:
        yield process


async def test_a_connection_without_init_is_closed_after_the_timeout(
    impatient_server: ServerProcess,
) -> None:
    await impatient_server.wait_ready()
    assert impatient_server.url is not None
    url = impatient_server.url.replace("http://", "ws://") + "/graphql"
    async with connect(url, subprotocols=[PROTOCOL]) as ws:
        # BILLING_GQL_WS_INIT_TIMEOUT_SECONDS=0.3 (the default, 10 s, would outlast this wait)
        assert await asyncio.wait_for(closed_code(ws), 5) == 4408
    async with connect(url, subprotocols=[PROTOCOL]) as ws:
        await acked(ws)  # in time: the connection stays
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}
