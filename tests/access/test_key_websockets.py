"""A WebSocket an API key opened ends as soon as the key is revoked (any server process)."""

from __future__ import annotations

import asyncio
import json

import pytest
from access_helpers import make_key
from billing_helpers import CREATE_CHECKOUT, http_api, make_customer, make_usd_plan, process_env
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from billing_gql.testing import ServerProcess
from billing_gql.testing.database import TestDatabase

PROTOCOL = "graphql-transport-ws"
UPDATES = "subscription($id: ID!) { checkoutUpdated(checkoutId: $id) { id status } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { userErrors { code } } }"


async def test_revoking_a_key_ends_its_websockets(clean_database: TestDatabase) -> None:
    env = process_env(clean_database.url, BILLING_GQL_MANUAL_PROVIDER="1")
    with ServerProcess(env) as server:
        assert server.url is not None
        api = http_api(server.url)
        try:
            await make_usd_plan(api, "pro")
            customer = await make_customer(api, "usr_ws")
            created = await api.gql(
                CREATE_CHECKOUT,
                {"input": {"customerId": customer, "planCode": "pro", "provider": "manual"}},
                admin=True,
            )
            checkout_id = created.ok()["createCheckout"]["checkout"]["id"]
            key_id, secret = await make_key(api, "READ")
            url = server.url.replace("http://", "ws://") + "/graphql"
            async with connect(url, subprotocols=[PROTOCOL]) as ws:
                init = {"authorization": f"Bearer {secret}"}
                await ws.send(json.dumps({"type": "connection_init", "payload": init}))
                assert json.loads(await ws.recv()) == {"type": "connection_ack"}
                query = {"query": UPDATES, "variables": {"id": checkout_id}}
                await ws.send(json.dumps({"id": "s", "type": "subscribe", "payload": query}))
                first = json.loads(await ws.recv())
                assert first["payload"]["data"]["checkoutUpdated"]["status"] == "OPEN"
                assert (await api.gql(REVOKE, {"id": key_id}, admin=True)).ok()
                ended = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert ended["type"] == "error" and ended["id"] == "s"
                assert [e["extensions"]["code"] for e in ended["payload"]] == ["UNAUTHENTICATED"]
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 10)
                assert info.value.rcvd is not None and info.value.rcvd.code == 4401
        finally:
            await api.http.aclose()
