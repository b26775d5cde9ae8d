"""The graphql-transport-ws protocol on ``GET /graphql`` of a real ``billing-gql serve``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from billing_helpers import http_api, make_customer, make_usd_plan, process_env, session_for
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from billing_gql.testing import ADMIN_KEY, ServerProcess
from billing_gql.testing.database import TestDatabase

PROTOCOL = "graphql-transport-ws"


@pytest.fixture(scope="module")
def server(billing_database: TestDatabase) -> Iterator[ServerProcess]:
    env = process_env(billing_database.url, BILLING_GQL_MANUAL_PROVIDER="1")
    with ServerProcess(env) as process:
        yield process


async def ws_url_of(server: ServerProcess) -> str:
    assert server.url is not None
    return server.url.replace("http://", "ws://") + "/graphql"


@pytest.fixture
async def ws_url(server: ServerProcess, clean_database: TestDatabase) -> str:
    return await ws_url_of(server)


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def recv(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """The close code and reason the server ended the connection with."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


async def closed_code(ws: ClientConnection) -> int:
    return (await closed_with(ws))[0]


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


async def open_checkout(server: ServerProcess, external_id: str) -> tuple[str, str, str]:
    """A customer with a session token and an open manual checkout: (customer, token, id)."""
    assert server.url is not None
    api = http_api(server.url)
    try:
        await make_usd_plan(api, "pro")
        customer = await make_customer(api, external_id)
        token = await session_for(api, customer)
        created = await api.gql(
            """mutation($input: CreateCheckoutInput!) { createCheckout(input: $input) {
                 checkout { id } userErrors { code } } }""",
            {"input": {"customerId": customer, "planCode": "pro", "provider": "manual"}},
            token=token,
        )
        return customer, token, created.ok()["createCheckout"]["checkout"]["id"]
    finally:
        await api.http.aclose()


UPDATES = "subscription($id: ID!) { checkoutUpdated(checkoutId: $id) { id status } }"


async def test_revoking_a_customers_sessions_closes_their_sockets(
    server: ServerProcess, ws_url: str
) -> None:
    customer_id, token, checkout_id = await open_checkout(server, "ws_revoked")
    assert server.url is not None
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        await acked(ws, {"authorization": f"Bearer {token}"})
        query = {"query": UPDATES, "variables": {"id": checkout_id}}
        await send(ws, {"id": "s", "type": "subscribe", "payload": query})
        assert (await recv(ws))["payload"]["data"]["checkoutUpdated"]["status"] == "OPEN"
        api = http_api(server.url)
        try:
            revoke = """mutation($id: ID!) { revokeCustomerSessions(customerId: $id) {
                revoked userErrors { code } } }"""
            done = await api.gql(revoke, {"id": customer_id}, admin=True)
            assert done.ok()["revokeCustomerSessions"] == {"revoked": 1, "userErrors": []}
            viewer = await api.gql("{ viewer { id } }", token=token)
            assert viewer.error_codes == ["UNAUTHENTICATED"]
        finally:
            await api.http.aclose()
        # Well before the session's hour is up: the notification ends the stream.
        ended = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ended["type"] == "error" and ended["id"] == "s"
        assert [e["extensions"]["code"] for e in ended["payload"]] == ["UNAUTHENTICATED"]
        assert await asyncio.wait_for(closed_code(ws), 10) == 4401


async def test_uvicorn_refuses_a_message_over_the_limit_itself(ws_url: str) -> None:
    async with connect(ws_url, subprotocols=[PROTOCOL], max_size=None) as ws:
        await acked(ws)
        # One byte over the 2 MiB body limit: uvicorn closes with 1009 (message too big)
        # instead of reading it whole for the handler to refuse (4400).
        await ws.send("x" * (2 * 1024 * 1024 + 1))
        assert await asyncio.wait_for(closed_code(ws), 10) == 1009


async def test_a_stream_ends_when_its_customer_session_expires(
    server: ServerProcess, ws_url: str, clean_database: TestDatabase
) -> None:
    _, token, checkout_id = await open_checkout(server, "ws_expiring")
    # The session has a minute at least; here it runs out two seconds from now.
    conn = await asyncpg.connect(clean_database.url)
    try:
        await conn.execute("UPDATE customer_sessions SET expires_at = now() + interval '2 s'")
    finally:
        await conn.close()
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:
        await acked(ws, {"authorization": f"Bearer {token}"})
        query = {"query": UPDATES, "variables": {"id": checkout_id}}
        await send(ws, {"id": "s", "type": "subscribe", "payload": query})
        first = await recv(ws)
        assert first["payload"]["data"]["checkoutUpdated"]["status"] == "OPEN"
        ended = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert ended["type"] == "error" and ended["id"] == "s"
        assert [e["extensions"]["code"] for e in ended["payload"]] == ["UNAUTHENTICATED"]
        assert await asyncio.wait_for(closed_code(ws), 15) == 4401


@pytest.fixture(scope="module")
def impatient_server(billing_database: TestDatabase) -> Iterator[ServerProcess]:
    env = process_env(
        billing_database.url,
        BILLING_GQL_MANUAL_PROVIDER="1",
        BILLING_GQL_WS_INIT_TIMEOUT_SECONDS="0.3",
        BILLING_GQL_WS_IDLE_TIMEOUT_SECONDS="1",
    )
    with ServerProcess(env) as process:
        yield process


async def test_a_connection_without_init_is_closed_after_the_timeout(
    impatient_server: ServerProcess,
) -> None:
    url = await ws_url_of(impatient_server)
    async with connect(url, subprotocols=[PROTOCOL]) as ws:
        # BILLING_GQL_WS_INIT_TIMEOUT_SECONDS=0.3 (the default, 10 s, would outlast this wait)
        assert await asyncio.wait_for(closed_code(ws), 5) == 4408
    async with connect(url, subprotocols=[PROTOCOL]) as ws:
        await acked(ws)  # in time: the connection stays
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}


async def test_a_socket_without_an_authenticated_operation_is_closed_when_idle(
    impatient_server: ServerProcess, clean_database: TestDatabase
) -> None:
    url = await ws_url_of(impatient_server)
    async with connect(url, subprotocols=[PROTOCOL]) as ws:
        # Anonymous, initialised, and a public query: closed after the idle timeout (1 s).
        await acked(ws)
        await send(ws, {"id": "1", "type": "subscribe", "payload": {"query": "{ plans { code } }"}})
        assert (await recv(ws))["type"] == "next"
        assert await asyncio.wait_for(closed_code(ws), 5) == 1000
    _, token, checkout_id = await open_checkout(impatient_server, "ws_idle")
    async with connect(url, subprotocols=[PROTOCOL]) as ws:
        # A running subscription of a customer token keeps the socket open...
        await acked(ws, {"authorization": f"Bearer {token}"})
        query = {"query": UPDATES, "variables": {"id": checkout_id}}
        await send(ws, {"id": "s", "type": "subscribe", "payload": query})
        assert (await recv(ws))["type"] == "next"
        await asyncio.sleep(2)
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}
        # ... until it ends: then the idle timer runs again.
        await send(ws, {"id": "s", "type": "complete"})
        assert await asyncio.wait_for(closed_code(ws), 5) == 1000


@pytest.fixture(scope="module")
def crowded_server(billing_database: TestDatabase) -> Iterator[ServerProcess]:
    env = process_env(
        billing_database.url, BILLING_GQL_WS_MAX_PER_TOKEN="2", BILLING_GQL_WS_MAX_PER_ADDRESS="3"
    )
    with ServerProcess(env) as process:
        yield process


async def test_connections_are_capped_per_token_and_per_address(
    crowded_server: ServerProcess, clean_database: TestDatabase
) -> None:
    url = await ws_url_of(crowded_server)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with (
        connect(url, subprotocols=[PROTOCOL]) as one,
        connect(url, subprotocols=[PROTOCOL]) as two,
    ):
        await acked(one, admin)
        await acked(two, admin)
        async with connect(url, subprotocols=[PROTOCOL]) as three:
            # A third socket of the same token: refused at connection_init.
            await send(three, {"type": "connection_init", "payload": admin})
            closed = await asyncio.wait_for(closed_with(three), 5)
            assert closed == (1013, "Too many connections for this token")
        async with connect(url, subprotocols=[PROTOCOL]) as three:
            # Without that token it may stay: the third from this address...
            await acked(three)
            async with connect(url, subprotocols=[PROTOCOL]) as four:
                # ... but not a fourth.
                closed = await asyncio.wait_for(closed_with(four), 5)
                assert closed == (1013, "Too many connections from this address")
        await send(one, {"type": "ping"})
        assert await recv(one) == {"type": "pong"}
