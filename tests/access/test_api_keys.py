"""Scoped API keys: created with a secret shown once, stored hashed, rotated and revoked at
once in every server process, expiring; and the ``billing-gql keys`` commands."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from access_helpers import CREATE_KEY, make_key
from billing_helpers import db_rows

from billing_gql.settings import BillingSettings
from billing_gql.testing import ApiClient, TestDatabase, run_cli
from billing_gql.testing.fixtures import MakeApi

KEYS = "{ apiKeys(includeRevoked: true) { id name scopes prefix expiresAt lastUsedAt revokedAt } }"
ROTATE = "mutation($id: ID!) { rotateApiKey(id: $id) { apiKey { prefix revokedAt } secret userErrors { code field } } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { apiKey { revokedAt } secret userErrors { code } } }"
METERS = "{ meters { code } }"


async def test_a_key_is_shown_once_and_stored_hashed(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    created = await api.admin(
        CREATE_KEY, {"input": {"name": " analytics ", "scopes": ["READ", "READ"]}}
    )
    payload = created["createApiKey"]
    key, secret = payload["apiKey"], payload["secret"]
    assert key["name"] == "analytics" and key["scopes"] == ["READ"]
    assert secret.startswith(key["prefix"] + "_") and key["prefix"].startswith("bgk_")
    assert len(key["prefix"]) == 12 and len(secret) > 50
    assert key["lastUsedAt"] is None and key["revokedAt"] is None and key["expiresAt"] is None
    # The list never shows a secret; the table holds only its SHA-256.
    listed = (await api.admin(KEYS))["apiKeys"]
    assert listed == [{**{k: key[k] for k in listed[0]}}]
    rows = await db_rows(clean_database.url, "SELECT * FROM api_keys")
    assert bytes(rows[0]["secret_hash"]) == hashlib.sha256(secret.encode()).digest()
    assert secret not in repr(rows)
    # It authenticates, and its use is noted (to the minute).
    assert (await api.gql(METERS, token=secret)).ok() == {"meters": []}
    assert (await api.admin(KEYS))["apiKeys"][0]["lastUsedAt"] is not None
    # A secret with a known prefix but another tail is refused.
    forged = secret[:13] + ("A" if secret[13] != "A" else "B") + secret[14:]
    assert (await api.gql(METERS, token=forged)).error_codes == ["UNAUTHENTICATED"]


async def test_rotation_and_revocation_act_at_once_in_every_process(make_api: MakeApi) -> None:
    manual = BillingSettings(manual_provider=True)
    async with make_api(billing=manual) as one, make_api(billing=manual) as two:
        key_id, secret = await make_key(one, "READ")
        assert (await two.gql(METERS, token=secret)).ok()
        rotated = (await one.admin(ROTATE, {"id": key_id}))["rotateApiKey"]
        fresh = rotated["secret"]
        assert rotated["apiKey"]["prefix"] != secret[:12] and fresh.startswith(
            rotated["apiKey"]["prefix"]
        )
        assert (await two.gql(METERS, token=secret)).error_codes == ["UNAUTHENTICATED"]
        assert (await two.gql(METERS, token=fresh)).ok()
        revoked = (await one.admin(REVOKE, {"id": key_id}))["revokeApiKey"]
        assert revoked["apiKey"]["revokedAt"] and revoked["secret"] is None
        assert (await two.gql(METERS, token=fresh)).error_codes == ["UNAUTHENTICATED"]
        # Revoking again is a no-op; a revoked key cannot be rotated back to life.
        again = (await one.admin(REVOKE, {"id": key_id}))["revokeApiKey"]
        assert again["apiKey"]["revokedAt"] == revoked["apiKey"]["revokedAt"]
        refused = (await one.gql(ROTATE, {"id": key_id}, admin=True)).data["rotateApiKey"]
        assert refused["userErrors"] == [{"code": "INVALID_STATE", "field": ["id"]}]
        assert (await one.admin(KEYS))["apiKeys"][0]["revokedAt"]
        assert (await one.admin("{ apiKeys { id } }"))["apiKeys"] == []  # live keys only


async def test_keys_expire_and_input_is_checked(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key_id, secret = await make_key(api, "READ", expiresAt=soon)
    assert (await api.gql(METERS, token=secret)).ok()
    await db_rows(
        clean_database.url,
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
        key_id,
    )
    assert (await api.gql(METERS, token=secret)).error_codes == ["UNAUTHENTICATED"]

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    bad = await api.gql(
        CREATE_KEY, {"input": {"name": "", "scopes": [], "expiresAt": past}}, admin=True
    )
    errors = bad.data["createApiKey"]["userErrors"]
    assert {tuple(e["field"]) for e in errors} == {
        ("input", "name"),
        ("input", "scopes"),
        ("input", "expiresAt"),
    }
    assert {e["code"] for e in errors} == {"INVALID_INPUT"}
    unknown = await api.gql(ROTATE, {"id": "00000000-0000-0000-0000-000000000000"}, admin=True)
    assert unknown.data["rotateApiKey"]["userErrors"] == [{"code": "NOT_FOUND", "field": ["id"]}]
    # Only admins manage keys: a read key may not, nor see them.
    _, reader = await make_key(api, "READ")
    assert (await api.gql(KEYS, token=reader)).error_codes == ["FORBIDDEN"]
    assert (
        await api.gql(CREATE_KEY, {"input": {"name": "x", "scopes": ["ADMIN"]}}, token=reader)
    ).error_codes == ["FORBIDDEN"]


def test_the_keys_commands(clean_database: TestDatabase) -> None:
    env = {"DATABASE_URL": clean_database.url}
    created = run_cli(
        "keys",
        "create",
        "--name",
        "backend",
        "--scope",
        "usage:write",
        "--scope",
        "entitlements:read",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    lines = created.stdout.strip().splitlines()
    secret = lines[-1]
    key_id, prefix, name, scopes, state = lines[0].split("\t")[:5]
    assert secret.startswith(prefix + "_") and name == "backend" and state == "active"
    assert scopes == "usage:write,entitlements:read"
    listed = run_cli("keys", "list", env=env)
    assert listed.returncode == 0 and listed.stdout.startswith(key_id)
    assert secret not in listed.stdout
    revoked = run_cli("keys", "revoke", key_id, env=env)
    assert revoked.returncode == 0 and "\trevoked\t" in revoked.stdout
    assert run_cli("keys", "list", env=env).stdout == ""
    assert key_id in run_cli("keys", "list", "--all", env=env).stdout
    bad = run_cli("keys", "revoke", "nope", env=env)
    assert bad.returncode == 2 and "not a key id" in bad.stderr
    missing = run_cli("keys", "revoke", "00000000-0000-0000-0000-000000000000", env=env)
    assert missing.returncode == 1 and "no such API key" in missing.stderr
    scope = run_cli("keys", "create", "--name", "x", "--scope", "everything", env=env)
    assert scope.returncode == 2 and "invalid choice" in scope.stderr


async def test_hostile_input_is_refused_cleanly(api: ApiClient) -> None:
    bad = await api.gql(CREATE_KEY, {"input": {"name": "a\x00b", "scopes": ["READ"]}}, admin=True)
    # NUL in any variable is refused before anything runs (graphql.inputs), so no key is made.
    assert bad.data is None and bad.error_codes == ["INVALID_INPUT"]
    listed = await api.gql("{ apiKeys { id } }", admin=True)
    assert listed.data is not None and listed.data["apiKeys"] == []
    for secret in ("bgk_\x00", "bgk_12345678_\x00" + "a" * 40, "bgk_" + "z" * 300):
        assert (await api.gql(METERS, token=secret)).error_codes == ["UNAUTHENTICATED"]
    audit = await api.gql(
        "query($a: String) { auditLog(filter: {actor: $a}) { nodes { id } } }",
        {"a": "x\x00"},
        admin=True,
    )
    assert audit.error_codes == ["INVALID_INPUT"]
