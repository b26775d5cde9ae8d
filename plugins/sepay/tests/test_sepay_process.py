"""The installed distribution in real processes: ``billing-gql serve`` discovers SePay through
its entry point, a Vietnamese customer gets QR instructions, transfers arrive by webhook, and
``billing-gql reconcile sepay`` (another process) repairs one whose webhook was lost, reading
the fake SePay API over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from billing_gql.testing import ServerProcess, TestDatabase, run_cli
from billing_gql_sepay.testing import FakeSePay

ADMIN = "process-admin-key"


async def test_a_served_instance_sells_by_transfer_and_reconciles(
    clean_database: TestDatabase,
) -> None:
    fake = FakeSePay()
    with fake.serve() as api_base:
        env = {
            "DATABASE_URL": clean_database.url,
            "BILLING_GQL_ADMIN_KEYS": ADMIN,
            "BILLING_GQL_PLUGINS": "sepay",
            "BILLING_GQL_ROUTES": "VN=sepay",
            **fake.env(API_BASE=api_base),
        }
        with ServerProcess(dict(env), timeout=120) as server:
            async with httpx.AsyncClient(base_url=server.url) as http:

                async def gql(query: str, **variables: Any) -> Any:
                    response = await http.post(
                        "/graphql",
                        json={"query": query, "variables": variables},
                        headers={"authorization": f"Bearer {ADMIN}"},
                    )
                    body = response.json()
                    assert "errors" not in body, body
                    return body["data"]

                await gql(
                    "mutation($i: CreatePlanInput!) { createPlan(input: $i) { plan { id } } }",
                    i={
                        "code": "pro",
                        "name": "Pro",
                        "interval": "MONTH",
                        "prices": [{"currency": "VND", "amount": "199000"}],
                        "features": [{"feature": "seats", "limit": "5"}],
                    },
                )
                customer = (
                    await gql(
                        "mutation($i: UpsertCustomerInput!) { upsertCustomer(input: $i) "
                        "{ customer { id } } }",
                        i={"externalId": "u1", "country": "VN", "currency": "VND"},
                    )
                )["upsertCustomer"]["customer"]["id"]
                created = (
                    await gql(
                        "mutation($i: CreateCheckoutInput!) { createCheckout(input: $i) { "
                        "checkout { id provider bankTransfer { reference qrCodeUrl } } } }",
                        i={"customerId": customer, "planCode": "pro"},
                    )
                )["createCheckout"]["checkout"]
                assert created["provider"] == "sepay"
                reference = created["bankTransfer"]["reference"]
                assert f"des={reference}" in created["bankTransfer"]["qrCodeUrl"]

                first = fake.transfer(100_000, f"{reference} thanh toan")
                delivery = fake.delivery(first)
                for _ in range(2):  # SePay's retry
                    ok = await http.post(
                        "/webhooks/sepay", content=delivery.body, headers=dict(delivery.headers)
                    )
                    assert ok.status_code == 200 and ok.json() == {"ok": True, "success": True}
                wrong = fake.with_key(delivery, "nope")
                refused = await http.post(
                    "/webhooks/sepay", content=wrong.body, headers=dict(wrong.headers)
                )
                assert refused.status_code == 401

                fake.transfer(99_000, f"CT {reference} con lai", code=None)  # webhook lost
                result = await asyncio.to_thread(run_cli, "reconcile", "sepay", env=env)
                assert result.returncode == 0, result.stderr
                assert result.stdout.splitlines()[-1] == (
                    "reconciled sepay: 0 subscriptions checked, 0 changed, 1 payment recorded"
                )
                state = await gql(
                    "query($id: ID!) { checkout(id: $id) { status amountPaid { amount } "
                    "subscription { status } } }",
                    id=created["id"],
                )
                assert state["checkout"] == {
                    "status": "COMPLETED",
                    "amountPaid": {"amount": "199000"},
                    "subscription": {"status": "ACTIVE"},
                }
    logs = "\n".join(server.output) + result.stdout + result.stderr
    assert fake.api_key not in logs and fake.api_token not in logs
