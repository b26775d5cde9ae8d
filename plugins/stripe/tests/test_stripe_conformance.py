"""The Stripe plugin runs billing-gql's provider conformance suite against the fake Stripe."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

import billing_gql_stripe.plugin
from billing_gql import parse_major
from billing_gql.testing import ConformanceContext, Delivery, PlanSpec, ProviderConformance
from billing_gql_stripe.testing import FakeStripe


def deliveries(fake: FakeStripe) -> list[Delivery]:
    """Every event the fake queued, signed as Stripe signs them."""
    return [Delivery(d.body, d.headers) for d in fake.drain()]


class TestStripeConformance(ProviderConformance):
    provider = "stripe"

    def plugins(self) -> Sequence[object]:
        return [billing_gql_stripe.plugin]

    def make_fake(self) -> FakeStripe:
        return FakeStripe()

    def env(self, fake: FakeStripe) -> Mapping[str, str]:
        return fake.env()

    def transport(self, fake: FakeStripe) -> httpx.AsyncBaseTransport:
        return fake.transport()

    def plan_refs(self, fake: FakeStripe, plan: PlanSpec) -> list[dict[str, str]]:
        price = fake.create_price(
            unit_amount=plan.amount_minor,
            currency=plan.currency.lower(),
            interval=None if plan.interval == "ONE_TIME" else plan.interval.lower(),
        )
        return [{"provider": "stripe", "ref": price, "currency": plan.currency}]

    async def complete_checkout(
        self, ctx: ConformanceContext, checkout: Mapping[str, Any]
    ) -> Sequence[Delivery]:
        fake: FakeStripe = ctx.fake
        session = fake.session_for(checkout["id"])
        assert checkout["url"] == session["url"]
        fake.complete_checkout(session["id"])
        return deliveries(fake)

    async def forge_completion(
        self, ctx: ConformanceContext, checkout: Mapping[str, Any], variant: str
    ) -> Sequence[Delivery]:
        """The buyer pays a cheap Payment Link of their own with our checkout id as its
        ``client_reference_id``: every variant is another session (Stripe charges a session
        what its prices say)."""
        fake: FakeStripe = ctx.fake
        amount, currency = {
            "other_session": (1, "usd"),
            "underpaid": (parse_major(self.price, self.currency) - 1, "usd"),
            "other_currency": (parse_major(self.price, self.currency), "jpy"),
        }[variant]
        price = fake.create_price(unit_amount=amount, currency=currency)
        fake.complete_checkout(fake.payment_link_session(price, checkout["id"]))
        return deliveries(fake)

    def sign(
        self,
        ctx: ConformanceContext,
        delivery: Delivery,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> Delivery:
        fake: FakeStripe = ctx.fake
        header = fake.sign(delivery.body, timestamp=timestamp, secret=secret)
        return Delivery(delivery.body, {**delivery.headers, "stripe-signature": header})

    async def cancel_at_provider(
        self, ctx: ConformanceContext, subscription: Mapping[str, Any], *, at_period_end: bool
    ) -> Sequence[Delivery]:
        fake: FakeStripe = ctx.fake
        fake.cancel(subscription["providerSubscriptionId"], at_period_end=at_period_end)
        return deliveries(fake)

    async def pending_deliveries(self, ctx: ConformanceContext) -> Sequence[Delivery]:
        return deliveries(ctx.fake)

    async def unrelated_delivery(self, ctx: ConformanceContext) -> Delivery:
        fake: FakeStripe = ctx.fake
        fake.create_customer(email="someone@example.com")  # customer.created
        [delivery] = deliveries(fake)
        return delivery

    def fail_next_call(self, ctx: ConformanceContext, *, unavailable: bool) -> bool:
        fake: FakeStripe = ctx.fake
        if unavailable:
            fake.fail_next(10, status=503)
        else:
            fake.error_next(
                400, message="This account cannot accept payments.", type="invalid_request_error"
            )
        return True

    def clear_failures(self, ctx: ConformanceContext) -> None:
        ctx.fake.clear_faults()


def test_deliveries_helper_keeps_stripes_bytes() -> None:
    fake = FakeStripe()
    fake.create_customer(email="a@b.c")
    [delivery] = deliveries(fake)
    assert json.loads(delivery.body)["type"] == "customer.created"
    assert delivery.headers["stripe-signature"].startswith("t=")
