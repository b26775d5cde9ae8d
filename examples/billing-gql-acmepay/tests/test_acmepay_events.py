"""AcmePay's life after the checkout, end to end: the fake acts, its signed deliveries go to
``/webhooks/acmepay``, and GraphQL shows the outcome (renewals, declines, refunds, one-time
purchases, expiries, replays)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

import billing_gql_acmepay.plugin
from billing_gql.testing import ApiClient
from billing_gql_acmepay.testing import AcmeDelivery, FakeAcmePay

SUB = """id status providerSubscriptionId currentPeriodStart currentPeriodEnd trialEnd
  cancelAtPeriodEnd endedAt"""
STATE = f"""query($c: ID!) {{
  subscriptions(customerId: $c) {{ nodes {{ {SUB} }} }}
  payments(customerId: $c) {{ nodes {{ providerRef status amount {{ amount }}
    amountRefunded {{ amount }} checkout {{ id }} }} }}
  entitlements(customerId: $c) {{ feature enabled }}
}}"""
CHECKOUT = f"""query($id: ID!) {{ checkout(id: $id) {{ id status url amount {{ amount }}
  amountPaid {{ amount }} subscription {{ {SUB} }} }} }}"""


@dataclass
class Shop:
    api: ApiClient
    fake: FakeAcmePay

    async def deliver(self, deliveries: list[AcmeDelivery]) -> None:
        for delivery in deliveries:
            response = await self.api.post_webhook("acmepay", delivery.body, delivery.headers)
            assert response.status_code == 200, response.text
            assert response.json() == {"ok": True}

    async def plan(self, *, one_time: bool = False, trial_days: int = 0) -> str:
        price = self.fake.create_price("29.00", "USD", interval=None if one_time else "month")
        code = f"plan_{price[-8:].lower()}"
        await self.api.admin(
            """mutation($input: CreatePlanInput!) { createPlan(input: $input) {
                 plan { id } userErrors { code message } } }""",
            {
                "input": {
                    "code": code,
                    "name": code,
                    "interval": "ONE_TIME" if one_time else "MONTH",
                    "trialDays": trial_days,
                    "prices": [{"currency": "USD", "amount": "29.00"}],
                    "features": [{"feature": "seats", "limit": "5"}],
                    "providerRefs": [{"provider": "acmepay", "ref": price, "currency": "USD"}],
                }
            },
        )
        return code

    async def checkout(self, plan: str) -> tuple[str, dict[str, Any]]:
        data = await self.api.admin(
            """mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) {
                 customer { id } userErrors { code } } }""",
            {"input": {"externalId": f"usr_{plan}", "email": "ann@example.com"}},
        )
        customer = data["upsertCustomer"]["customer"]["id"]
        data = await self.api.admin(
            """mutation($input: CreateCheckoutInput!) { createCheckout(input: $input) {
                 checkout { id url } userErrors { code message } } }""",
            {"input": {"customerId": customer, "planCode": plan, "provider": "acmepay"}},
        )
        return customer, data["createCheckout"]["checkout"]

    async def bought(self, *, one_time: bool = False, trial_days: int = 0) -> tuple[str, str]:
        """A completed purchase: (customer id, checkout id)."""
        customer, checkout = await self.checkout(
            await self.plan(one_time=one_time, trial_days=trial_days)
        )
        self.fake.pay(self.fake.checkout_for(checkout["id"])["id"])
        await self.deliver(self.fake.drain())
        return customer, checkout["id"]

    async def state(self, customer: str) -> dict[str, Any]:
        data = await self.api.admin(STATE, {"c": customer})
        return {
            "subscriptions": data["subscriptions"]["nodes"],
            "payments": data["payments"]["nodes"],
            "entitled": any(e["enabled"] for e in data["entitlements"]),
        }

    async def get_checkout(self, checkout_id: str) -> dict[str, Any]:
        found: dict[str, Any] = (await self.api.admin(CHECKOUT, {"id": checkout_id}))["checkout"]
        return found


@pytest.fixture
async def shop(make_api: Any) -> AsyncIterator[Shop]:
    fake = FakeAcmePay()
    async with make_api(
        plugins=[billing_gql_acmepay.plugin],
        env=fake.env(),
        transports={"acmepay": fake.transport()},
    ) as api:
        yield Shop(api, fake)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_a_renewal_extends_the_period_and_records_its_payment(shop: Shop) -> None:
    customer, checkout_id = await shop.bought()
    [sub] = (await shop.state(customer))["subscriptions"]
    shop.fake.renew(sub["providerSubscriptionId"])
    await shop.deliver(shop.fake.drain())
    state = await shop.state(customer)
    [renewed] = state["subscriptions"]
    assert renewed["status"] == "ACTIVE" and state["entitled"]
    assert at(renewed["currentPeriodStart"]) == at(sub["currentPeriodEnd"])
    assert at(renewed["currentPeriodEnd"]) > at(sub["currentPeriodEnd"])
    assert sorted((p["status"], p["amount"]["amount"]) for p in state["payments"]) == [
        ("succeeded", "29.00"),
        ("succeeded", "29.00"),
    ]
    # The renewal's money belongs to the subscription, not to the long-completed checkout.
    assert [p["checkout"] is None for p in state["payments"]].count(True) == 1
    checkout = await shop.get_checkout(checkout_id)
    assert checkout["amountPaid"] == checkout["amount"] == {"amount": "29.00"}


async def test_a_declined_renewal_is_past_due_until_the_next_payment(shop: Shop) -> None:
    customer, _ = await shop.bought()
    [sub] = (await shop.state(customer))["subscriptions"]
    acme_id = sub["providerSubscriptionId"]
    shop.fake.fail_renewal(acme_id)
    await shop.deliver(shop.fake.drain())
    state = await shop.state(customer)
    assert state["subscriptions"][0]["status"] == "PAST_DUE"
    assert "failed" in [p["status"] for p in state["payments"]]
    shop.fake.renew(acme_id)
    await shop.deliver(shop.fake.drain())
    assert (await shop.state(customer))["subscriptions"][0]["status"] == "ACTIVE"


async def test_a_trial_becomes_active_when_acmepay_first_charges(shop: Shop) -> None:
    customer, _ = await shop.bought(trial_days=7)
    state = await shop.state(customer)
    [sub] = state["subscriptions"]
    assert sub["status"] == "TRIALING" and sub["trialEnd"] == sub["currentPeriodEnd"]
    assert state["payments"] == [] and state["entitled"]
    shop.fake.renew(sub["providerSubscriptionId"])
    await shop.deliver(shop.fake.drain())
    state = await shop.state(customer)
    assert state["subscriptions"][0]["status"] == "ACTIVE"
    assert [p["amount"]["amount"] for p in state["payments"]] == ["29.00"]


async def test_a_cancel_at_period_end_ends_when_the_period_does(shop: Shop) -> None:
    customer, _ = await shop.bought()
    [sub] = (await shop.state(customer))["subscriptions"]
    shop.fake.cancel(sub["providerSubscriptionId"], at_period_end=True)
    await shop.deliver(shop.fake.drain())
    state = await shop.state(customer)
    assert state["subscriptions"][0]["cancelAtPeriodEnd"] and state["entitled"]
    shop.fake.renew(sub["providerSubscriptionId"])  # AcmePay ends it instead of charging
    await shop.deliver(shop.fake.drain())
    state = await shop.state(customer)
    [ended] = state["subscriptions"]
    assert ended["status"] == "CANCELED" and at(ended["endedAt"]) == at(sub["currentPeriodEnd"])
    assert not state["entitled"] and len(state["payments"]) == 1


async def test_refunds_record_the_total_and_a_late_smaller_total_does_not_lower_it(
    shop: Shop,
) -> None:
    customer, checkout_id = await shop.bought()
    payment_id = shop.fake.checkouts[shop.fake.checkout_for(checkout_id)["id"]]["payment"]
    shop.fake.refund(payment_id, "10.00")
    partial = shop.fake.drain()
    shop.fake.refund(payment_id)
    full = shop.fake.drain()
    await shop.deliver(full + partial)  # the partial refund's event arrives last
    [payment] = (await shop.state(customer))["payments"]
    assert payment["providerRef"] == payment_id
    assert payment["status"] == "refunded" and payment["amountRefunded"] == {"amount": "29.00"}


async def test_a_one_time_plan_completes_with_a_payment_and_no_subscription(shop: Shop) -> None:
    customer, checkout_id = await shop.bought(one_time=True)
    checkout = await shop.get_checkout(checkout_id)
    assert checkout["status"] == "COMPLETED" and checkout["subscription"] is None
    assert checkout["amountPaid"] == {"amount": "29.00"}
    state = await shop.state(customer)
    assert state["subscriptions"] == [] and len(state["payments"]) == 1


async def test_a_checkout_expired_at_acmepay_expires_ours(shop: Shop) -> None:
    _, checkout = await shop.checkout(await shop.plan())
    shop.fake.expire(shop.fake.checkout_for(checkout["id"])["id"])
    await shop.deliver(shop.fake.drain())
    assert (await shop.get_checkout(checkout["id"]))["status"] == "EXPIRED"


async def test_a_delivery_that_could_not_apply_yet_is_replayed_without_re_verifying(
    shop: Shop,
) -> None:
    customer, _ = await shop.bought()
    [sub] = (await shop.state(customer))["subscriptions"]
    shop.fake.renew(sub["providerSubscriptionId"])
    renewal = shop.fake.drain()
    renewal_payment = next(d.event["data"]["id"] for d in renewal if d.type == "payment.succeeded")
    shop.fake.refund(renewal_payment)
    [refund] = shop.fake.drain()
    await shop.deliver([refund])  # before the payment it refunds: stored, kept as failed
    data = await shop.api.admin(
        """{ webhookDeliveries(provider: "acmepay", status: "failed") {
             nodes { id eventId error } } }"""
    )
    [failed] = data["webhookDeliveries"]["nodes"]
    assert failed["eventId"] == refund.event_id and "unknown acmepay payment" in failed["error"]
    await shop.deliver(renewal)
    # A replay parses the stored body again; the signature and its timestamp are not
    # checked a second time (the delivery may be hours old by then).
    data = await shop.api.admin(
        """mutation($id: ID!) { replayWebhookDelivery(id: $id) {
             delivery { status } userErrors { code } } }""",
        {"id": failed["id"]},
    )
    assert data["replayWebhookDelivery"]["delivery"]["status"] == "applied"
    refunded = [p for p in (await shop.state(customer))["payments"] if p["status"] == "refunded"]
    assert [p["providerRef"] for p in refunded] == [renewal_payment]


OPERATION = """mutation($id: ID!) {
  cancel: cancelSubscription(input: {subscriptionId: $id, atPeriodEnd: true}) {
    subscription { cancelAtPeriodEnd } userErrors { code } }
  resume: resumeSubscription(subscriptionId: $id) {
    subscription { cancelAtPeriodEnd } userErrors { code } } }"""


async def test_an_old_delivery_in_flight_after_our_operation_does_not_regress(
    shop: Shop,
) -> None:
    customer, _ = await shop.bought()
    [sub] = (await shop.state(customer))["subscriptions"]
    acme_id = sub["providerSubscriptionId"]
    shop.fake.cancel(acme_id, at_period_end=True)  # in AcmePay's dashboard
    in_flight = shop.fake.drain()  # not delivered yet
    # The customer cancels through us too, then changes their mind: resumed through us.
    done = await shop.api.admin(OPERATION, {"id": sub["id"]})
    assert done["resume"]["subscription"]["cancelAtPeriodEnd"] is False
    # The dashboard's cancel arrives late: older than the state our resume answered with.
    await shop.deliver(in_flight)
    [state] = (await shop.state(customer))["subscriptions"]
    assert state["cancelAtPeriodEnd"] is False and state["status"] == "ACTIVE"
    await shop.deliver(shop.fake.drain())  # AcmePay's deliveries about our cancel and resume
    [state] = (await shop.state(customer))["subscriptions"]
    assert state["cancelAtPeriodEnd"] is False
    assert shop.fake.subscriptions[acme_id]["cancel_at_period_end"] is False


async def test_a_signed_but_unreadable_body_is_400_and_nothing_is_stored(shop: Shop) -> None:
    body = b'{"type": "payment.succeeded"}'  # no event id
    response = await shop.api.post_webhook("acmepay", body, shop.fake.sign(body))
    assert response.status_code == 400
    unsigned = await shop.api.post_webhook("acmepay", body, {})
    assert unsigned.status_code == 401
    data = await shop.api.admin('{ webhookDeliveries(provider: "acmepay") { nodes { id } } }')
    assert data["webhookDeliveries"]["nodes"] == []
