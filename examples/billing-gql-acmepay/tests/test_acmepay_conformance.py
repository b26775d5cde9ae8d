"""AcmePay runs billing-gql's provider conformance suite against the fake AcmePay.

AcmePay has every capability the suite exercises (trials, a body signature with a timestamp,
provider-side cancel, unrelated event types, API calls that can fail), so no inherited test
is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

import billing_gql_acmepay.plugin
from billing_gql import format_minor, parse_major
from billing_gql.testing import ConformanceContext, Delivery, PlanSpec, ProviderConformance
from billing_gql_acmepay.testing import FakeAcmePay


def deliveries(fake: FakeAcmePay) -> list[Delivery]:
    """Every event the fake queued, signed as AcmePay signs them."""
    return [Delivery(d.body, d.headers) for d in fake.drain()]


class TestAcmePayConformance(ProviderConformance):
    provider = "acmepay"
    signature_max_ahead = 300  # the plugin refuses timestamps 300 s away either way

    def plugins(self) -> Sequence[object]:
        return [billing_gql_acmepay.plugin]

    def make_fake(self) -> FakeAcmePay:
        return FakeAcmePay()

    def env(self, fake: FakeAcmePay) -> Mapping[str, str]:
        return fake.env()

    def transport(self, fake: FakeAcmePay) -> httpx.AsyncBaseTransport:
        return fake.transport()

    def plan_refs(self, fake: FakeAcmePay, plan: PlanSpec) -> list[dict[str, str]]:
        interval = None if plan.interval == "ONE_TIME" else plan.interval.lower()
        price = fake.create_price(plan.amount, plan.currency, interval=interval)
        return [{"provider": "acmepay", "ref": price, "currency": plan.currency}]

    async def complete_checkout(
        self, ctx: ConformanceContext, checkout: Mapping[str, Any]
    ) -> Sequence[Delivery]:
        fake: FakeAcmePay = ctx.fake
        at_acmepay = fake.checkout_for(checkout["id"])
        assert checkout["url"] == at_acmepay["url"]
        fake.pay(at_acmepay["id"])
        return deliveries(fake)

    async def forge_completion(
        self, ctx: ConformanceContext, checkout: Mapping[str, Any], variant: str
    ) -> Sequence[Delivery]:
        """AcmePay's ``payment.succeeded`` and ``checkout.paid`` of our checkout as they would
        read for another AcmePay checkout paying 0.01, one unit less than the price, or the
        price in JPY."""
        fake: FakeAcmePay = ctx.fake
        fake.pay(fake.checkout_for(checkout["id"])["id"])
        other = "chk_theirs"
        forged = []
        for event in fake.drain(["payment.succeeded", "checkout.paid"]):
            data = dict(event.event["data"])
            payment = data if event.event["type"] == "payment.succeeded" else data["payment"]
            currency = payment["currency"]
            minor = parse_major(payment["amount"], currency)
            if variant == "other_session":
                payment.update(amount=format_minor(1, currency), checkout=other)
                data["id" if payment is not data else "checkout"] = other
            elif variant == "underpaid":
                payment["amount"] = format_minor(minor - 1, currency)
            else:
                payment.update(amount=format_minor(minor, "JPY"), currency="JPY")
            signed = fake.delivery({**event.event, "id": f"{event.event_id}_forged", "data": data})
            forged.append(Delivery(signed.body, signed.headers))
        return forged

    def sign(
        self,
        ctx: ConformanceContext,
        delivery: Delivery,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> Delivery:
        fake: FakeAcmePay = ctx.fake
        signed = fake.sign(delivery.body, timestamp=timestamp, secret=secret)
        return Delivery(delivery.body, {**delivery.headers, **signed})

    async def cancel_at_provider(
        self, ctx: ConformanceContext, subscription: Mapping[str, Any], *, at_period_end: bool
    ) -> Sequence[Delivery]:
        fake: FakeAcmePay = ctx.fake
        fake.cancel(subscription["providerSubscriptionId"], at_period_end=at_period_end)
        return deliveries(fake)

    async def pending_deliveries(self, ctx: ConformanceContext) -> Sequence[Delivery]:
        return deliveries(ctx.fake)

    async def unrelated_delivery(self, ctx: ConformanceContext) -> Delivery:
        fake: FakeAcmePay = ctx.fake
        customer = next(iter(fake.customers))
        fake.update_customer(customer, email="new-address@example.com")  # customer.updated
        [delivery] = deliveries(fake)
        return delivery

    def fail_next_call(self, ctx: ConformanceContext, *, unavailable: bool) -> bool:
        fake: FakeAcmePay = ctx.fake
        if unavailable:
            fake.fail_next(10, status=503)  # more than the HTTP client's retries
        else:
            fake.error_next(
                400, code="account_inactive", message="This account cannot accept payments."
            )
        return True

    def clear_failures(self, ctx: ConformanceContext) -> None:
        fake: FakeAcmePay = ctx.fake
        fake.clear_faults()
