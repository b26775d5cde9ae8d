"""Customers, session tokens, and the auth rules of docs/api.md#authentication."""

from __future__ import annotations

from dataclasses import replace

from billing_helpers import StatementCounter

from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import MakeApi

UPSERT = """mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) {
  customer { id externalId email name country currency metadata }
  userErrors { field message code } } }"""
SESSION = """mutation($id: ID!, $ttl: Int) { createCustomerSession(customerId: $id, ttlSeconds: $ttl) {
  token expiresAt userErrors { field message code } } }"""


async def make_customer(api: ApiClient, external_id: str, **fields: object) -> dict[str, object]:
    data = await api.admin(UPSERT, {"input": {"externalId": external_id, **fields}})
    customer: dict[str, object] = data["upsertCustomer"]["customer"]
    return customer


async def session_for(api: ApiClient, customer_id: object, ttl: int = 3600) -> str:
    data = await api.admin(SESSION, {"id": customer_id, "ttl": ttl})
    token: str = data["createCustomerSession"]["token"]
    return token


async def test_upsert_keeps_omitted_clears_null_replaces_metadata(api: ApiClient) -> None:
    first = await make_customer(
        api,
        "usr_1",
        email="a@example.com",
        name="Ann",
        country="vn",
        currency="vnd",
        metadata={"a": 1, "b": 2},
    )
    assert first["country"] == "VN" and first["currency"] == "VND"
    second = await make_customer(api, "usr_1", name=None, metadata={"c": 3})
    assert second["id"] == first["id"]
    assert second["email"] == "a@example.com"
    assert second["name"] is None
    assert second["metadata"] == {"c": 3}


async def test_upsert_validation(api: ApiClient) -> None:
    result = await api.gql(
        UPSERT,
        {
            "input": {
                "externalId": "",
                "email": "nope",
                "country": "Vietnam",
                "currency": "ABC",
                "metadata": [1],
            }
        },
        admin=True,
    )
    errors = {tuple(e["field"]): e["code"] for e in result.data["upsertCustomer"]["userErrors"]}
    assert errors == {
        ("input", "externalId"): "INVALID_INPUT",
        ("input", "email"): "INVALID_INPUT",
        ("input", "country"): "INVALID_INPUT",
        ("input", "currency"): "INVALID_CURRENCY",
        ("input", "metadata"): "INVALID_INPUT",
    }


async def test_session_token_sees_only_its_customer(api: ApiClient) -> None:
    ann = await make_customer(api, "ann")
    bob = await make_customer(api, "bob")
    token = await session_for(api, ann["id"])
    assert token.startswith("bgcs_")

    viewer = (await api.gql("{ viewer { id externalId } }", token=token)).ok()
    assert viewer["viewer"] == {"id": ann["id"], "externalId": "ann"}
    own = (
        await api.gql(
            "query($id: ID) { customer(id: $id) { externalId } }", {"id": ann["id"]}, token=token
        )
    ).ok()
    assert own["customer"]["externalId"] == "ann"
    by_ext = (await api.gql('{ customer(externalId: "ann") { id } }', token=token)).ok()
    assert by_ext["customer"]["id"] == ann["id"]

    for query, variables in [
        ("query($id: ID) { customer(id: $id) { externalId } }", {"id": bob["id"]}),
        ('{ customer(externalId: "bob") { id } }', None),
        ('{ customer(externalId: "nobody") { id } }', None),
        ('{ customer(id: "not-a-uuid") { id } }', None),
    ]:
        result = await api.gql(query, variables, token=token)
        assert result.status == 200
        assert result.data == {"customer": None}
        assert result.error_codes == ["FORBIDDEN"]


async def test_customer_token_cannot_use_admin_operations(api: ApiClient) -> None:
    ann = await make_customer(api, "ann")
    token = await session_for(api, ann["id"])
    for query in [
        "{ meters { code } }",
        'mutation { upsertCustomer(input: {externalId: "x"}) { userErrors { code } } }',
        f'mutation {{ createCustomerSession(customerId: "{ann["id"]}") {{ token }} }}',
        'mutation { archivePlan(code: "p") { userErrors { code } } }',
        'mutation { createMeter(input: {code: "m", name: "m", aggregation: COUNT}) '
        "{ userErrors { code } } }",
    ]:
        result = await api.gql(query, token=token)
        assert result.status == 200
        assert result.error_codes == ["FORBIDDEN"], (query, result.body)
        assert result.data is None


async def test_unauthenticated_and_invalid_tokens(api: ApiClient) -> None:
    ann = await make_customer(api, "ann")
    # No token: public fields work, others are UNAUTHENTICATED.
    assert (await api.gql("{ plans { code } providers { name } }")).ok()["plans"] == []
    for query in [
        "{ viewer { id } }",
        '{ customer(externalId: "ann") { id } }',
        "{ meters { code } }",
    ]:
        result = await api.gql(query)
        assert result.error_codes == ["UNAUTHENTICATED"], query
    # An unknown token is refused even next to public fields.
    result = await api.gql("{ plans { code } }", token="bgcs_unknown")
    assert result.status == 200
    assert result.error_codes == ["UNAUTHENTICATED"]
    result = await api.gql("{ plans { code } }", token="wrong-admin-key")
    assert result.error_codes == ["UNAUTHENTICATED"]
    # The admin key: viewer is null, everything else works.
    assert (await api.gql("{ viewer { id } }", admin=True)).ok() == {"viewer": None}
    found = await api.admin('{ customer(externalId: "ann") { id } }')
    assert found["customer"]["id"] == ann["id"]
    assert (await api.admin('{ customer(externalId: "nobody") { id } }')) == {"customer": None}


async def test_exactly_one_customer_selector(api: ApiClient) -> None:
    result = await api.gql("{ customer { id } }", admin=True)
    assert result.error_codes == ["INVALID_INPUT"]
    result = await api.gql('{ customer(id: "a", externalId: "b") { id } }', admin=True)
    assert result.error_codes == ["INVALID_INPUT"]
    # The message names this field's arguments, not the customerId pair other fields take.
    assert result.errors[0]["message"] == "give exactly one of id and externalId"


async def test_expired_and_stored_hashed_sessions(api: ApiClient, clean_database) -> None:  # type: ignore[no-untyped-def]
    import asyncpg

    ann = await make_customer(api, "ann")
    token = await session_for(api, ann["id"], ttl=60)
    conn = await asyncpg.connect(clean_database.url)
    try:
        stored = await conn.fetchval("SELECT token_hash FROM customer_sessions")
        assert token not in stored and len(stored) == 64
        await conn.execute("UPDATE customer_sessions SET expires_at = now() - interval '1 second'")
    finally:
        await conn.close()
    result = await api.gql("{ viewer { id } }", token=token)
    assert result.error_codes == ["UNAUTHENTICATED"]


async def test_session_validation(api: ApiClient) -> None:
    ann = await make_customer(api, "ann")
    bad_ttl = await api.gql(SESSION, {"id": ann["id"], "ttl": 5}, admin=True)
    assert bad_ttl.data["createCustomerSession"]["userErrors"][0]["code"] == "INVALID_INPUT"
    missing = await api.gql(SESSION, {"id": "00000000-0000-0000-0000-000000000000"}, admin=True)
    assert missing.data["createCustomerSession"]["userErrors"][0]["code"] == "NOT_FOUND"


async def test_a_customer_by_external_id_is_read_once(
    make_api: MakeApi, app_settings: Settings, clean_database: TestDatabase
) -> None:
    """``customer(externalId:)`` finds the row by external id; its fields are then served
    from that row, not from a second read by id (statements counted on every pool
    connection)."""
    settings = replace(
        app_settings,
        database=replace(app_settings.database, pool_min_size=3, pool_max_size=3),
        billing=BillingSettings(manual_provider=True),
    )
    async with make_api(settings=settings) as api:
        await make_customer(api, "usr_1", email="a@example.com")
        pool = api.http.app.state.runtime.db.pool  # type: ignore[attr-defined]
        counter = StatementCounter()
        for conn in [h._con for h in pool._holders if h._con is not None]:
            conn.add_query_logger(counter)
        query = '{ customer(externalId: "usr_1") { externalId email } }'
        await api.admin(query)  # warm the connections' type caches
        counter.take()
        data = await api.admin(query)
        assert data == {"customer": {"externalId": "usr_1", "email": "a@example.com"}}
        assert len(counter.take()) == 1
