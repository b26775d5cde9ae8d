"""The command line: serve on the embedded database, migrate, plugins."""

from __future__ import annotations

from pathlib import Path

import httpx
from billing_helpers import db_rows

from billing_gql.testing import TestDatabase, run_cli
from billing_gql.testing.server import ServerProcess


def test_serve_on_embedded_postgres_without_database_url(tmp_path: Path) -> None:
    """With no DATABASE_URL, serve starts its own PostgreSQL and the walkthrough works."""
    env: dict[str, str | None] = {
        "DATABASE_URL": None,
        "BILLING_GQL_DATA_DIR": str(tmp_path / "data"),
        "BILLING_GQL_ADMIN_KEYS": "walkthrough-key",
        "BILLING_GQL_MANUAL_PROVIDER": "1",
    }
    with ServerProcess(env, timeout=120) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            admin = {"authorization": "Bearer walkthrough-key"}
            plan = http.post(
                "/graphql",
                headers=admin,
                json={
                    "query": """mutation {
                createPlan(input: {code: "pro", name: "Pro", interval: MONTH,
                  prices: [{currency: "USD", amount: "29.00"}],
                  features: [{feature: "seats", limit: "5"}]}) { plan { code } userErrors { code } } }"""
                },
            )
            assert plan.json()["data"]["createPlan"]["plan"] == {"code": "pro"}
            customer = http.post(
                "/graphql",
                headers=admin,
                json={
                    "query": """mutation {
                upsertCustomer(input: {externalId: "usr_42", email: "a@example.com"}) {
                  customer { id } userErrors { code } } }"""
                },
            ).json()
            customer_id = customer["data"]["upsertCustomer"]["customer"]["id"]
            session = http.post(
                "/graphql",
                headers=admin,
                json={
                    "query": "mutation($id: ID!) { createCustomerSession(customerId: $id) { token } }",
                    "variables": {"id": customer_id},
                },
            ).json()
            token = session["data"]["createCustomerSession"]["token"]
            viewer = http.post(
                "/graphql",
                headers={"authorization": f"Bearer {token}"},
                json={"query": "{ viewer { externalId } plans { code } }"},
            ).json()
            assert viewer == {
                "data": {"viewer": {"externalId": "usr_42"}, "plans": [{"code": "pro"}]}
            }
            # The README's checkout steps: sell the plan, mark it paid, check the feature.
            create = """mutation($c: ID!) { createCheckout(input: {customerId: $c,
                planCode: "pro", provider: "manual"}) {
                checkout { id status amount { amount currency } } userErrors { code } } }"""
            checkout = http.post(
                "/graphql", headers=admin, json={"query": create, "variables": {"c": customer_id}}
            ).json()["data"]["createCheckout"]["checkout"]
            assert checkout["status"] == "OPEN"
            assert checkout["amount"] == {"amount": "29.00", "currency": "USD"}
            complete = """mutation($id: ID!) { completeManualCheckout(checkoutId: $id) {
                checkout { status subscription { status } } userErrors { code } } }"""
            done = http.post(
                "/graphql",
                headers=admin,
                json={"query": complete, "variables": {"id": checkout["id"]}},
            ).json()
            assert done["data"]["completeManualCheckout"]["checkout"] == {
                "status": "COMPLETED",
                "subscription": {"status": "ACTIVE"},
            }
            seats = http.post(
                "/graphql",
                headers=admin,
                json={
                    "query": """{
                entitlement(externalCustomerId: "usr_42", feature: "seats") {
                  enabled limit used remaining } }"""
                },
            ).json()
            assert seats == {
                "data": {
                    "entitlement": {"enabled": True, "limit": "5", "used": "0", "remaining": "5"}
                }
            }
    assert (tmp_path / "data" / "pg").is_dir()
    # Stopping the service (SIGTERM) stopped its PostgreSQL too.
    assert embedded_servers(tmp_path) == []
    # The data survives a restart of the service.
    with ServerProcess(env, timeout=120) as server, httpx.Client(base_url=server.url) as http:
        plans = http.post("/graphql", json={"query": "{ plans { code } }"}).json()
        assert plans == {"data": {"plans": [{"code": "pro"}]}}
    assert embedded_servers(tmp_path) == []


def embedded_servers(data_dir: Path) -> list[int]:
    """PostgreSQL processes still serving a data directory under ``data_dir``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(str(data_dir) in part for part in cmdline) and "postgres" in " ".join(cmdline):
            found.append(proc.info["pid"])
    return found


def test_serve_warns_without_admin_keys(billing_database: TestDatabase) -> None:
    env = {
        "DATABASE_URL": billing_database.url,
        "BILLING_GQL_ADMIN_KEYS": None,
        "BILLING_GQL_REDIRECT_ORIGINS": None,
    }
    with ServerProcess(env) as server, httpx.Client(base_url=server.url) as http:
        result = http.post(
            "/graphql",
            headers={"authorization": "Bearer anything"},
            json={"query": "{ meters { code } }"},
        ).json()
        assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert any("BILLING_GQL_ADMIN_KEYS" in line for line in server.output)
    assert any("BILLING_GQL_REDIRECT_ORIGINS is not set" in line for line in server.output)


def test_migrate_is_idempotent(billing_database: TestDatabase) -> None:
    result = run_cli("migrate", env={"DATABASE_URL": billing_database.url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "up to date"


def test_plugins_lists_providers() -> None:
    result = run_cli(
        "plugins", env={"BILLING_GQL_MANUAL_PROVIDER": "1", "BILLING_GQL_PLUGINS": "manual"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split("\t") == [
        "manual",
        "billing-gql",
        "configured",
        "cancel,change_plan,checkout,pause,resume",
    ]


def test_bad_configuration_is_a_clear_error() -> None:
    result = run_cli("plugins", env={"BILLING_GQL_ROUTES": "VN"})
    assert result.returncode == 2
    assert "BILLING_GQL_ROUTES" in result.stderr


async def test_webhooks_replay_reports_the_delivery(clean_database: TestDatabase) -> None:
    """``billing-gql webhooks replay ID``: the delivery's state after the replay (a no-op for
    one already applied), exit 1 for no such delivery, 2 for something that is not an id."""
    rows = await db_rows(
        clean_database.url,
        "INSERT INTO webhook_deliveries (provider, event_id, status, attempts, body, headers, "
        "received_at, applied_at) VALUES ('fakepay', 'evt_1', 'applied', 1, '\\x7b7d', '{}', "
        "now(), now()) RETURNING id::text AS id",
    )
    env: dict[str, str | None] = {"DATABASE_URL": clean_database.url}
    delivery = rows[0]["id"]
    replayed = run_cli("webhooks", "replay", delivery, env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.split() == [delivery, "fakepay", "evt_1", "applied"]

    unknown = run_cli("webhooks", "replay", "4f8a1c7e-0000-4000-8000-000000000000", env=env)
    assert unknown.returncode == 1
    assert "no webhook delivery" in unknown.stderr
    malformed = run_cli("webhooks", "replay", "evt_1", env=env)
    assert malformed.returncode == 2
    assert "is not a delivery id" in malformed.stderr
