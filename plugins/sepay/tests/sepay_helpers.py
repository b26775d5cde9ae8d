"""GraphQL documents and helpers shared by the SePay plugin's tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from billing_gql.testing import ApiClient
from billing_gql_sepay.plugin import SePayProvider
from billing_gql_sepay.testing import FakeSePay, WebhookDelivery

USER_ERRORS = "userErrors { field message code }"

CREATE_PLAN = f"""mutation($input: CreatePlanInput!) {{ createPlan(input: $input) {{
  plan {{ id code }} {USER_ERRORS} }} }}"""

UPSERT = f"""mutation($input: UpsertCustomerInput!) {{ upsertCustomer(input: $input) {{
  customer {{ id externalId }} {USER_ERRORS} }} }}"""

SESSION = """mutation($id: ID!) { createCustomerSession(customerId: $id) { token } }"""

SUBSCRIPTION_FIELDS = """id status provider currency quantity currentPeriodStart
  currentPeriodEnd renewedUntil cancelAtPeriodEnd plan { code }
  renewalCheckout { id status purpose amount { amount currency }
    bankTransfer { reference qrCodeUrl amount { amount currency } } }"""

CHECKOUT_FIELDS = f"""id status provider purpose url expiresAt
  amount {{ amount currency }} amountPaid {{ amount currency }}
  customer {{ id externalId }} plan {{ code }}
  subscription {{ {SUBSCRIPTION_FIELDS} }}
  bankTransfer {{ bankCode accountNumber accountName reference qrCodeUrl
                  amount {{ amount currency }} }}"""

CREATE_CHECKOUT = f"""mutation($input: CreateCheckoutInput!) {{ createCheckout(input: $input) {{
  checkout {{ {CHECKOUT_FIELDS} }} {USER_ERRORS} }} }}"""

CHECKOUT = f"""query($id: ID!) {{ checkout(id: $id) {{ {CHECKOUT_FIELDS} }} }}"""

SUBSCRIPTION = f"""query($id: ID!) {{ subscription(id: $id) {{ {SUBSCRIPTION_FIELDS} }} }}"""

PAYMENT_FIELDS = """id provider providerRef status reference amount { amount currency }
  checkout { id status } customer { id } receivedAt"""

PAYMENTS = f"""query($c: ID) {{ payments(customerId: $c) {{
  edges {{ node {{ {PAYMENT_FIELDS} }} }} }} }}"""

UNMATCHED = f"""query($p: String) {{ unmatchedPayments(provider: $p) {{
  edges {{ node {{ {PAYMENT_FIELDS} }} }} }} }}"""

ASSIGN = f"""mutation($p: ID!, $c: ID!) {{ assignPayment(paymentId: $p, checkoutId: $c) {{
  checkout {{ {CHECKOUT_FIELDS} }} {USER_ERRORS} }} }}"""

ENTITLEMENTS = """query($c: ID) { entitlements(customerId: $c) { feature enabled limit } }"""

DELIVERIES = """query($p: String) { webhookDeliveries(provider: $p) {
  edges { node { eventId eventType status attempts error } } } }"""

PRICE = 199_000
"""The plans' price in VND."""


def plan_input(code: str = "pro", **extra: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": code.title(),
        "interval": "MONTH",
        "prices": [
            {"currency": "VND", "amount": str(PRICE)},
            {"currency": "USD", "amount": "9.00"},
        ],
        "features": [{"feature": "seats", "limit": "5"}, {"feature": "export"}],
        **extra,
    }


async def make_plan(api: ApiClient, code: str = "pro", **extra: Any) -> None:
    await api.admin(CREATE_PLAN, {"input": plan_input(code, **extra)})


async def make_customer(
    api: ApiClient, external_id: str = "usr_vn", country: str | None = "VN", **fields: Any
) -> str:
    data = await api.admin(
        UPSERT, {"input": {"externalId": external_id, "country": country, **fields}}
    )
    return str(data["upsertCustomer"]["customer"]["id"])


async def session_for(api: ApiClient, customer_id: str) -> str:
    data = await api.admin(SESSION, {"id": customer_id})
    return str(data["createCustomerSession"]["token"])


async def create_checkout(
    api: ApiClient, *, token: str | None = None, **input: Any
) -> dict[str, Any]:
    """``createCheckout`` (as admin, or with a customer token); returns the payload."""
    result = await api.gql(CREATE_CHECKOUT, {"input": input}, admin=token is None, token=token)
    assert result.status == 200 and not result.errors, result.body
    payload: dict[str, Any] = result.data["createCheckout"]
    return payload


async def open_checkout(api: ApiClient, customer_id: str, **input: Any) -> dict[str, Any]:
    payload = await create_checkout(
        api, customerId=customer_id, planCode="pro", currency="VND", **input
    )
    assert payload["userErrors"] == [], payload
    checkout: dict[str, Any] = payload["checkout"]
    assert checkout["status"] == "OPEN" and checkout["bankTransfer"] is not None
    return checkout


async def get_checkout(api: ApiClient, checkout_id: str) -> dict[str, Any]:
    data = await api.admin(CHECKOUT, {"id": checkout_id})
    checkout: dict[str, Any] = data["checkout"]
    return checkout


async def payments(api: ApiClient, customer_id: str | None = None) -> list[dict[str, Any]]:
    data = await api.admin(PAYMENTS, {"c": customer_id})
    return [e["node"] for e in data["payments"]["edges"]]


async def unmatched(api: ApiClient) -> list[dict[str, Any]]:
    data = await api.admin(UNMATCHED, {"p": "sepay"})
    return [e["node"] for e in data["unmatchedPayments"]["edges"]]


async def entitlements(api: ApiClient, customer_id: str) -> dict[str, dict[str, Any]]:
    data = await api.admin(ENTITLEMENTS, {"c": customer_id})
    return {e["feature"]: e for e in data["entitlements"]}


async def deliveries(api: ApiClient) -> list[dict[str, Any]]:
    data = await api.admin(DELIVERIES, {"p": "sepay"})
    return [e["node"] for e in data["webhookDeliveries"]["edges"]]


async def send(api: ApiClient, delivery: WebhookDelivery) -> httpx.Response:
    """POST a delivery to ``/webhooks/sepay``."""
    return await api.post_webhook("sepay", delivery.body, dict(delivery.headers))


async def deliver(api: ApiClient, fake: FakeSePay, *args: Any, **kwargs: Any) -> Any:
    """Record a transfer at the fake and deliver its webhook; assert the 2xx SePay expects."""
    txn = fake.transfer(*args, **kwargs)
    response = await send(api, fake.delivery(txn))
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "success": True}
    return txn


async def db_rows(db_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(db_url)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def set_clock(db_url: str, when: datetime) -> None:
    """Set the stored test clock (BILLING_GQL_TEST_CLOCK) directly."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "INSERT INTO clock_state (id, now) VALUES (1, $1) "
            "ON CONFLICT (id) DO UPDATE SET now = EXCLUDED.now",
            when,
        )
    finally:
        await conn.close()


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def qr_params(url: str) -> dict[str, str]:
    return dict(httpx.URL(url).params)


def recorded_sleeps(runtime: Any) -> list[float]:
    """Make the SePay API client of ``runtime`` (a worker's, or an app's
    ``app.state.runtime``) record its waits instead of sleeping."""
    provider = runtime.providers.get_configured("sepay")
    assert isinstance(provider, SePayProvider) and provider.api is not None
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    provider.api.sleep = sleep
    return waits
