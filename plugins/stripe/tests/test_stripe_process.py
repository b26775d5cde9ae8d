"""The installed distribution in real processes: entry-point discovery, serve, webhooks."""

from __future__ import annotations

import httpx

from billing_gql.testing import ServerProcess, TestDatabase, run_cli
from billing_gql_stripe.testing import FakeStripe

ADMIN = "process-admin-key"


def test_plugins_lists_stripe_from_its_entry_point(billing_database: TestDatabase) -> None:
    fake = FakeStripe()
    configured = run_cli("plugins", env={"DATABASE_URL": billing_database.url, **fake.env()})
    assert configured.returncode == 0, configured.stderr
    caps = "cancel,change_plan,checkout,hosted_checkout,pause,portal,reconcile,recurring,refund,resume,usage"
    assert f"stripe\tbilling-gql-stripe 0.1.0\tconfigured\t{caps}" in configured.stdout.splitlines()
    bare = run_cli("plugins", env={"DATABASE_URL": billing_database.url})
    assert (
        "stripe\tbilling-gql-stripe 0.1.0\tnot configured (missing "
        f"BILLING_GQL_STRIPE_API_KEY, BILLING_GQL_STRIPE_WEBHOOK_SECRET)\t{caps}"
    ) in bare.stdout.splitlines()
    for output in (configured.stdout + configured.stderr, bare.stdout + bare.stderr):
        assert fake.api_key not in output and fake.webhook_secret not in output


def test_a_served_instance_takes_stripe_deliveries(billing_database: TestDatabase) -> None:
    fake = FakeStripe()
    fake.create_customer(email="a@b.c")  # customer.created: signed, stored, then ignored
    [delivery] = fake.drain()
    env: dict[str, str | None] = {
        "DATABASE_URL": billing_database.url,
        "BILLING_GQL_ADMIN_KEYS": ADMIN,
        "BILLING_GQL_PLUGINS": "stripe",
        **fake.env("http://127.0.0.1:9"),
    }
    with ServerProcess(env, timeout=120) as server, httpx.Client(base_url=server.url) as http:
        providers = http.post(
            "/graphql", json={"query": "{ providers { name displayName configured capabilities } }"}
        ).json()["data"]["providers"]
        assert {
            "name": "stripe",
            "displayName": "Stripe",
            "configured": True,
            "capabilities": [
                "cancel",
                "change_plan",
                "checkout",
                "hosted_checkout",
                "pause",
                "portal",
                "reconcile",
                "recurring",
                "refund",
                "resume",
                "usage",
            ],
        } in providers
        tampered = http.post(
            "/webhooks/stripe", content=delivery.body + b" ", headers=delivery.headers
        )
        assert tampered.status_code == 401
        for _ in range(2):
            ok = http.post("/webhooks/stripe", content=delivery.body, headers=delivery.headers)
            assert ok.status_code == 200 and ok.json() == {"ok": True}
        found = http.post(
            "/graphql",
            headers={"authorization": f"Bearer {ADMIN}"},
            json={
                "query": '{ webhookDeliveries(provider: "stripe") { edges { node { eventId eventType status } } } }'
            },
        ).json()["data"]["webhookDeliveries"]["edges"]
        mine = [e["node"] for e in found if e["node"]["eventId"] == delivery.event_id]
        assert mine == [
            {"eventId": delivery.event_id, "eventType": "customer.created", "status": "ignored"}
        ]
    assert fake.api_key not in "\n".join(server.output)
