"""The installed distribution in real processes: entry-point discovery, serve, webhooks."""

from __future__ import annotations

import httpx

from billing_gql.testing import ServerProcess, TestDatabase, run_cli
from billing_gql_polar.testing import FakePolar

ADMIN = "process-admin-key"


def test_plugins_lists_polar_from_its_entry_point(billing_database: TestDatabase) -> None:
    fake = FakePolar()
    configured = run_cli("plugins", env={"DATABASE_URL": billing_database.url, **fake.env()})
    assert configured.returncode == 0, configured.stderr
    caps = (
        "cancel,change_plan,checkout,hosted_checkout,portal,reconcile,recurring,refund,resume,usage"
    )
    assert f"polar\tbilling-gql-polar 0.1.0\tconfigured\t{caps}" in configured.stdout.splitlines()
    bare = run_cli("plugins", env={"DATABASE_URL": billing_database.url})
    assert (
        "polar\tbilling-gql-polar 0.1.0\tnot configured (missing "
        f"BILLING_GQL_POLAR_ACCESS_TOKEN, BILLING_GQL_POLAR_WEBHOOK_SECRET)\t{caps}"
    ) in bare.stdout.splitlines()
    for output in (configured.stdout + configured.stderr, bare.stdout + bare.stderr):
        assert fake.access_token not in output and fake.webhook_secret not in output


def test_a_served_instance_takes_polar_deliveries(billing_database: TestDatabase) -> None:
    fake = FakePolar()
    fake.create_customer(external_id="usr_1", email="a@example.com")  # customer.created
    [delivery] = fake.drain()
    env: dict[str, str | None] = {
        "DATABASE_URL": billing_database.url,
        "BILLING_GQL_ADMIN_KEYS": ADMIN,
        "BILLING_GQL_PLUGINS": "polar",
        **fake.env("http://127.0.0.1:9"),
    }
    with ServerProcess(env, timeout=120) as server, httpx.Client(base_url=server.url) as http:
        providers = http.post(
            "/graphql", json={"query": "{ providers { name displayName configured } }"}
        ).json()["data"]["providers"]
        assert {"name": "polar", "displayName": "Polar", "configured": True} in providers
        tampered = http.post(
            "/webhooks/polar", content=delivery.body + b" ", headers=delivery.headers
        )
        assert tampered.status_code == 401
        for _ in range(2):
            again = fake.redeliver(delivery)
            ok = http.post("/webhooks/polar", content=again.body, headers=again.headers)
            assert ok.status_code == 200 and ok.json() == {"ok": True}
        found = http.post(
            "/graphql",
            headers={"authorization": f"Bearer {ADMIN}"},
            json={
                "query": '{ webhookDeliveries(provider: "polar") '
                "{ edges { node { eventId eventType status } } } }"
            },
        ).json()["data"]["webhookDeliveries"]["edges"]
        mine = [e["node"] for e in found if e["node"]["eventId"] == delivery.webhook_id]
        assert mine == [
            {"eventId": delivery.webhook_id, "eventType": "customer.created", "status": "ignored"}
        ]
    output = "\n".join(server.output)
    assert fake.access_token not in output and fake.webhook_secret not in output
