"""The end-to-end world of the Polar tests: an app with the Polar plugin on the fake Polar, a
plan on a Polar product (with a benefit), a customer, and GraphQL operations."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from standardwebhooks import Webhook

from billing_gql.testing import ApiClient
from billing_gql_polar.testing import FakePolar, PolarDelivery

_ERRORS = "userErrors { field message code }"
_SUB = """id status provider providerSubscriptionId currency cancelAtPeriodEnd canceledAt
  currentPeriodStart currentPeriodEnd trialEnd plan { code } pendingPlan { code }"""
CREATE_PLAN = f"""mutation($input: CreatePlanInput!) {{ createPlan(input: $input) {{
  plan {{ code }} {_ERRORS} }} }}"""
UPSERT = f"""mutation($input: UpsertCustomerInput!) {{ upsertCustomer(input: $input) {{
  customer {{ id }} {_ERRORS} }} }}"""
CREATE_CHECKOUT = f"""mutation($input: CreateCheckoutInput!) {{ createCheckout(input: $input) {{
  checkout {{ id status url }} {_ERRORS} }} }}"""
CHECKOUT = f"""query($id: ID!) {{ checkout(id: $id) {{ id status url
  amount {{ amount currency }} amountPaid {{ amount currency }} subscription {{ {_SUB} }} }} }}"""
STATE = f"""query($c: ID!) {{
  subscriptions(customerId: $c) {{ edges {{ node {{ {_SUB} }} }} }}
  payments(customerId: $c) {{ edges {{ node {{
    providerRef status amount {{ amount currency }} }} }} }}
  entitlements(customerId: $c) {{ feature enabled limit }}
}}"""
CANCEL = f"""mutation($id: ID!, $end: Boolean!) {{
  cancelSubscription(input: {{subscriptionId: $id, atPeriodEnd: $end}}) {{
    subscription {{ {_SUB} }} {_ERRORS} }} }}"""
RESUME = f"""mutation($id: ID!) {{ resumeSubscription(subscriptionId: $id) {{
  subscription {{ {_SUB} }} {_ERRORS} }} }}"""
CHANGE = f"""mutation($input: ChangeSubscriptionPlanInput!) {{
  changeSubscriptionPlan(input: $input) {{ subscription {{ {_SUB} }} effectiveAt {_ERRORS} }} }}"""
PORTAL = f"""mutation($c: ID!, $r: String) {{ createPortalSession(customerId: $c, returnUrl: $r) {{
  url {_ERRORS} }} }}"""
DELIVERIES = """{ webhookDeliveries(provider: "polar") { edges { node {
  eventId eventType status attempts error } } } }"""
PROVIDERS = "{ providers { name displayName configured capabilities } }"

FEATURES = [{"feature": "seats", "limit": "5"}, {"feature": "export"}]


@dataclass
class World:
    api: ApiClient
    fake: FakePolar
    db_url: str
    settings: Any = None
    """The app's settings (with the fake's environment), for a runtime of one's own."""
    customer: str = ""
    product: str = ""
    grant_feature: str = "api_calls"

    async def post(self, delivery: PolarDelivery, headers: dict[str, str] | None = None) -> int:
        response = await self.api.post_webhook(
            "polar", delivery.body, headers if headers is not None else delivery.headers
        )
        return response.status_code

    async def post_all(self, deliveries: Sequence[PolarDelivery]) -> None:
        for delivery in deliveries:
            status = await self.post(delivery)
            assert status == 200, (delivery.type, status)

    async def state(self) -> dict[str, Any]:
        data = await self.api.admin(STATE, {"c": self.customer})
        return {
            "subscriptions": [e["node"] for e in data["subscriptions"]["edges"]],
            "payments": [e["node"] for e in data["payments"]["edges"]],
            "entitlements": {e["feature"]: e for e in data["entitlements"]},
        }

    async def checkout(self, checkout_id: str) -> dict[str, Any]:
        found: dict[str, Any] = (await self.api.admin(CHECKOUT, {"id": checkout_id}))["checkout"]
        return found

    async def inbox(self) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.db_url)
        try:
            rows = await conn.fetch(
                "SELECT event_id, event_type, status FROM webhook_deliveries "
                "WHERE provider = 'polar' ORDER BY received_at"
            )
        finally:
            await conn.close()
        return [dict(r) for r in rows]


async def make_plan(w: World, code: str, product: str, price: str = "29.00") -> None:
    await w.api.admin(
        CREATE_PLAN,
        {
            "input": {
                "code": code,
                "name": code.title(),
                "interval": "MONTH",
                "prices": [{"currency": "USD", "amount": price}],
                "features": FEATURES,
                "providerRefs": [{"provider": "polar", "ref": product, "currency": "USD"}],
            }
        },
    )


async def open_checkout(w: World, plan: str = "pro") -> dict[str, Any]:
    result = await w.api.gql(
        CREATE_CHECKOUT,
        {
            "input": {
                "customerId": w.customer,
                "planCode": plan,
                "provider": "polar",
                "successUrl": "https://app.example/thanks?checkout_id={CHECKOUT_ID}",
                "cancelUrl": "https://app.example/pricing",
            }
        },
        admin=True,
    )
    payload: dict[str, Any] = result.data["createCheckout"]
    return payload


async def paid(w: World) -> tuple[dict[str, Any], list[PolarDelivery]]:
    """A checkout paid at Polar and the deliveries Polar sent about it (posted in order)."""
    payload = await open_checkout(w)
    assert payload["userErrors"] == []
    checkout = payload["checkout"]
    w.fake.pay(w.fake.checkout_for(checkout["id"])["id"])
    deliveries = w.fake.drain()
    await w.post_all(deliveries)
    return await w.checkout(checkout["id"]), deliveries


def entitled(state: dict[str, Any], feature: str) -> bool:
    found = state["entitlements"].get(feature)
    return bool(found and found["enabled"])


def as_polar(secret: str) -> Webhook:
    return Webhook(base64.b64encode(secret.encode()).decode())


def forge_completion(fake: FakePolar, our_checkout_id: str, variant: str) -> list[PolarDelivery]:
    """Polar's completion deliveries of our checkout (``checkout.updated`` succeeded and the
    ``order.paid``), as they would read for a payment that is not the one we asked for,
    signed as Polar signs: ``other_session`` another checkout (and its order) paying 1,
    ``underpaid`` one unit less than the price (a discount), ``other_currency`` the price in
    JPY."""
    fake.pay(fake.checkout_for(our_checkout_id)["id"])
    kept = [d for d in fake.drain() if d.type in ("checkout.updated", "order.paid")]
    for delivery in kept:
        data = dict(delivery.data)
        if data.get("status") not in (None, "succeeded", "paid"):
            continue
        amounts = [
            k for k in ("amount", "subtotal_amount", "net_amount", "total_amount") if k in data
        ]
        if variant == "other_session":
            other = str(uuid.uuid4())
            data.update({k: 1 for k in amounts})
            data["id" if delivery.type == "checkout.updated" else "checkout_id"] = other
        elif variant == "underpaid":
            data.update({k: data[k] - 1 for k in amounts})
        else:
            data["currency"] = "jpy"
        fake.emit(delivery.type, data)
    return fake.drain()
