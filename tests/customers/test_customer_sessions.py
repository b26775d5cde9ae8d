"""Security issue #11, item 12 (HTTP and worker side): customer sessions can be revoked, and
the worker deletes expired ones."""

from __future__ import annotations

from billing_helpers import db_rows, make_customer, runtime_for, session_for

from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import ApiClient
from billing_gql.testing.database import TestDatabase
from billing_gql.worker.sweeps import run_due_work

REVOKE = """mutation($id: ID!) { revokeCustomerSessions(customerId: $id) {
  revoked userErrors { field message code } } }"""
VIEWER = "{ viewer { externalId } }"


async def test_revoked_tokens_are_unauthenticated_at_once(api: ApiClient) -> None:
    ann = await make_customer(api, "ann")
    bob = await make_customer(api, "bob")
    first, second = await session_for(api, ann), await session_for(api, ann)
    bobs = await session_for(api, bob)
    assert (await api.gql(VIEWER, token=first)).ok() == {"viewer": {"externalId": "ann"}}

    # Only an admin may revoke.
    refused = await api.gql(REVOKE, {"id": ann}, token=bobs)
    assert refused.error_codes == ["FORBIDDEN"]
    assert (await api.gql(VIEWER, token=first)).ok()

    done = await api.admin(REVOKE, {"id": ann})
    assert done["revokeCustomerSessions"] == {"revoked": 2, "userErrors": []}
    for token in (first, second):
        result = await api.gql(VIEWER, token=token)
        assert result.error_codes == ["UNAUTHENTICATED"]
    # Another customer's sessions are untouched; a new session works.
    assert (await api.gql(VIEWER, token=bobs)).ok() == {"viewer": {"externalId": "bob"}}
    fresh = await session_for(api, ann)
    assert (await api.gql(VIEWER, token=fresh)).ok() == {"viewer": {"externalId": "ann"}}

    again = await api.gql(REVOKE, {"id": "00000000-0000-0000-0000-000000000000"}, admin=True)
    assert again.data["revokeCustomerSessions"]["revoked"] is None
    errors = again.data["revokeCustomerSessions"]["userErrors"]
    assert [(e["code"], e["field"]) for e in errors] == [("NOT_FOUND", ["customerId"])]


async def test_the_worker_deletes_expired_sessions(
    api: ApiClient, app_settings: Settings, clean_database: TestDatabase
) -> None:
    ann = await make_customer(api, "ann")
    expired = await session_for(api, ann)
    live = await session_for(api, ann)
    await db_rows(
        clean_database.url,
        "UPDATE customer_sessions SET expires_at = now() - interval '1 s' "
        "WHERE token_hash = encode(sha256($1::bytea), 'hex')",
        expired.encode(),
    )
    async with runtime_for(app_settings, BillingSettings()) as runtime:
        assert (await run_due_work(runtime))["delete_expired_sessions"] == 1
        rows = await db_rows(
            clean_database.url, "SELECT expires_at > now() AS live FROM customer_sessions"
        )
        assert rows == [{"live": True}]
        assert (await api.gql(VIEWER, token=live)).ok() == {"viewer": {"externalId": "ann"}}
        assert (await run_due_work(runtime))["delete_expired_sessions"] == 0
