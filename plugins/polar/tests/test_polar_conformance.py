"""The Polar plugin runs billing-gql's provider conformance suite against the fake Polar."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from polar_world import forge_completion

import billing_gql_polar.plugin
from billing_gql.testing import ConformanceContext, Delivery, PlanSpec, ProviderConformance
from billing_gql_polar.testing import FakePolar


def deliveries(fake: FakePolar) -> list[Delivery]:
    """Every delivery the fake queued, signed as Polar signs them."""
    return [Delivery(d.body, d.headers) for d in fake.drain()]


class TestPolarConformance(ProviderConformance):
    provider = "polar"
    signature_max_ahead = 300  # Standard Webhooks: 5 minutes either way

    def plugins(self) -> Sequence[object]:
        return [billing_gql_polar.plugin]

    def make_fake(self) -> FakePolar:
        return FakePolar()

    def env(self, fake: FakePolar) -> Mapping[str, str]:
        return fake.env()

    def transport(self, fake: FakePolar) -> httpx.AsyncBaseTransport:
        return fake.transport()

    def plan_refs(self, fake: FakePolar, plan: PlanSpec) -> list[dict[str, str]]:
        product = fake.create_product(
            name=plan.code,
            prices={plan.currency.lower(): plan.amount_minor},
            recurring_interval=None if plan.interval == "ONE_TIME" else plan.interval.lower(),
        )
        return [{"provider": "polar", "ref": product, "currency": plan.currency}]

    async def complete_checkout(
        self, ctx: ConformanceContext, checkout: Mapping[str, Any]
    ) -> Sequence[Delivery]:
        fake: FakePolar = ctx.fake
        polar_checkout = fake.checkout_for(checkout["id"])
        assert checkout["url"] == polar_checkout["url"]
        fake.pay(polar_checkout["id"])
        return deliveries(fake)

    async def forge_completion(
        self, ctx: ConformanceContext, checkout: Mapping[str, Any], variant: str
    ) -> Sequence[Delivery]:
        fake: FakePolar = ctx.fake
        return [
            Delivery(d.body, d.headers) for d in forge_completion(fake, checkout["id"], variant)
        ]

    def sign(
        self,
        ctx: ConformanceContext,
        delivery: Delivery,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> Delivery:
        fake: FakePolar = ctx.fake
        headers = fake.sign_headers(
            delivery.body, delivery.headers["webhook-id"], timestamp=timestamp, secret=secret
        )
        return Delivery(delivery.body, {**delivery.headers, **headers})

    async def cancel_at_provider(
        self, ctx: ConformanceContext, subscription: Mapping[str, Any], *, at_period_end: bool
    ) -> Sequence[Delivery]:
        fake: FakePolar = ctx.fake
        fake.cancel(subscription["providerSubscriptionId"], at_period_end=at_period_end)
        return deliveries(fake)

    async def pending_deliveries(self, ctx: ConformanceContext) -> Sequence[Delivery]:
        return deliveries(ctx.fake)

    async def unrelated_delivery(self, ctx: ConformanceContext) -> Delivery:
        fake: FakePolar = ctx.fake
        fake.create_customer(external_id="someone_else", email="someone@example.com")
        [delivery] = deliveries(fake)  # customer.created
        return delivery

    def fail_next_call(self, ctx: ConformanceContext, *, unavailable: bool) -> bool:
        fake: FakePolar = ctx.fake
        if unavailable:
            fake.fail_next(10, status=429, retry_after="0")  # beyond the client's retries
        else:
            fake.error_next(
                403, {"error": "NotPermitted", "detail": "The organization cannot sell yet."}
            )
        return True

    def clear_failures(self, ctx: ConformanceContext) -> None:
        ctx.fake.clear_faults()


def test_deliveries_helper_keeps_polars_bytes_and_headers() -> None:
    fake = FakePolar()
    fake.create_customer(external_id="usr_1", email="a@example.com")
    [delivery] = deliveries(fake)
    assert json.loads(delivery.body)["type"] == "customer.created"
    assert delivery.headers["webhook-signature"].startswith("v1,")
    assert set(delivery.headers) >= {"webhook-id", "webhook-timestamp"}
