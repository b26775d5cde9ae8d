"""Every Polar event type we use, as the fake sends it, mapped to normalized events."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from polar_helpers import CUSTOMER, checkout_request, plan_info

from billing_gql import (
    BillingEvent,
    BillingInterval,
    EventKind,
    Money,
    StoredDelivery,
    SubscriptionStatus,
    WebhookPayloadError,
)
from billing_gql_polar.mapping import STATUS, subscription_snapshot
from billing_gql_polar.plugin import PolarProvider
from billing_gql_polar.testing import FakePolar, PolarDelivery


def stored(delivery: PolarDelivery) -> StoredDelivery:
    return StoredDelivery(
        provider="polar",
        event_id=delivery.webhook_id,
        event_type=delivery.type,
        body=delivery.body,
        headers={},
        received_at=datetime.now(UTC),
    )


async def parse(polar: PolarProvider, delivery: PolarDelivery) -> Sequence[BillingEvent]:
    """What the provider makes of ``delivery`` once stored in the inbox."""
    return await polar.parse_webhook(stored(delivery))


def of_type(deliveries: Sequence[PolarDelivery], event_type: str) -> PolarDelivery:
    found = [d for d in deliveries if d.type == event_type]
    assert len(found) == 1, [d.type for d in deliveries]
    return found[0]


def stamped(delivery: PolarDelivery) -> datetime:
    return datetime.fromisoformat(delivery.payload["timestamp"])


async def paid(
    fake: FakePolar, polar: PolarProvider, *, trial_days: int = 0, one_time: bool = False
) -> tuple[str, str, list[PolarDelivery]]:
    """(our checkout id, Polar checkout id, the deliveries of paying it)."""
    flag = fake.create_benefit(description="API", metadata={"feature": "api", "limit": 1000})
    product = fake.create_product(
        name="Pro",
        prices={"usd": 2900},
        recurring_interval=None if one_time else "month",
        benefits=[flag],
    )
    interval = BillingInterval.ONE_TIME if one_time else BillingInterval.MONTH
    request = checkout_request(
        product, plan=plan_info(product, interval=interval, trial_days=trial_days)
    )
    session = await polar.create_checkout(request)
    polar_checkout = str(session.provider_checkout_id)
    fake.drain()  # checkout.created
    fake.pay(polar_checkout)
    return request.checkout_id, polar_checkout, fake.drain()


async def test_paying_sends_what_polar_sends(fake: FakePolar, polar: PolarProvider) -> None:
    _, _, deliveries = await paid(fake, polar)
    assert [d.type for d in deliveries] == [
        "checkout.updated",
        "customer.created",
        "subscription.created",
        "order.created",
        "order.updated",
        "order.paid",
        "subscription.active",
        "benefit_grant.created",
        "checkout.updated",
        "customer.state_changed",
    ]
    stamps = [stamped(d) for d in deliveries]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


async def test_checkout_updated_succeeded_completes_our_checkout(
    fake: FakePolar, polar: PolarProvider
) -> None:
    checkout_id, polar_checkout, deliveries = await paid(fake, polar)
    confirmed, succeeded = [d for d in deliveries if d.type == "checkout.updated"]
    assert confirmed.data["status"] == "confirmed" and await parse(polar, confirmed) == []
    [event] = await parse(polar, succeeded)
    assert event.kind == EventKind.CHECKOUT_COMPLETED
    assert event.occurred_at == stamped(succeeded)
    assert (event.checkout_id, event.provider_checkout_id) == (checkout_id, polar_checkout)
    assert event.customer_id == CUSTOMER.id
    assert event.external_customer_id == CUSTOMER.external_id
    assert event.provider_customer_id == fake.checkouts[polar_checkout]["customer_id"]
    assert event.payment is None and event.subscription is None  # order.paid has the money


async def test_an_expired_checkout(fake: FakePolar, polar: PolarProvider) -> None:
    product = fake.create_product(name="Pro", prices={"usd": 2900})
    request = checkout_request(product)
    session = await polar.create_checkout(request)
    fake.expire_checkout(str(session.provider_checkout_id))
    deliveries = fake.drain()
    assert [d.type for d in deliveries] == [
        "checkout.created",
        "checkout.updated",
        "checkout.expired",
    ]
    assert await parse(polar, deliveries[0]) == []
    for delivery in deliveries[1:]:
        [event] = await parse(polar, delivery)
        assert event.kind == EventKind.CHECKOUT_EXPIRED and event.checkout_id == request.checkout_id


async def test_a_checkout_that_is_not_ours_is_ignored(
    fake: FakePolar, polar: PolarProvider, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, deliveries = await paid(fake, polar)
    succeeded = [d for d in deliveries if d.type == "checkout.updated"][-1]
    data = {**succeeded.data, "metadata": {}}
    fake.emit("checkout.updated", data)
    [foreign] = fake.drain()
    caplog.set_level(logging.INFO)
    assert await parse(polar, foreign) == []
    assert "not ours" in caplog.text


async def test_the_first_order_paid_completes_the_checkout_with_the_money(
    fake: FakePolar, polar: PolarProvider
) -> None:
    checkout_id, polar_checkout, deliveries = await paid(fake, polar)
    order = of_type(deliveries, "order.paid")
    [event, mirrored] = await parse(polar, order)
    # The order is Polar's invoice, mirrored with its number and amounts.
    assert mirrored.kind == EventKind.INVOICE_UPDATED and mirrored.invoice is not None
    assert mirrored.invoice.provider_invoice_id == order.data["id"]
    assert mirrored.invoice.number == order.data["invoice_number"]
    assert mirrored.invoice.status == "PAID"
    assert mirrored.invoice.total == mirrored.invoice.amount_paid == Money(2900, "USD")
    assert mirrored.invoice.checkout_id == checkout_id
    assert event.kind == EventKind.CHECKOUT_COMPLETED
    assert event.checkout_id == checkout_id and event.provider_checkout_id == polar_checkout
    payment = event.payment
    assert payment is not None
    assert payment.provider_ref == order.data["id"]
    assert payment.amount == Money(2900, "USD")
    assert payment.provider_subscription_id == order.data["subscription_id"]
    assert payment.details["billing_reason"] == "subscription_create"
    assert event.occurred_at == stamped(order)
    assert await parse(polar, of_type(deliveries, "order.created")) == []  # still pending


async def test_a_free_first_order_completes_without_money(
    fake: FakePolar, polar: PolarProvider
) -> None:
    _, _, deliveries = await paid(fake, polar, trial_days=14)
    assert "subscription.active" not in [d.type for d in deliveries]
    [event, _] = await parse(polar, of_type(deliveries, "order.paid"))
    assert event.kind == EventKind.CHECKOUT_COMPLETED and event.payment is None
    [sub_event] = await parse(polar, of_type(deliveries, "subscription.created"))
    snap = sub_event.subscription
    assert snap is not None and snap.status == SubscriptionStatus.TRIALING
    assert snap.trial_end is not None and snap.trial_end == snap.current_period_end


async def test_a_one_time_purchase(fake: FakePolar, polar: PolarProvider) -> None:
    checkout_id, _, deliveries = await paid(fake, polar, one_time=True)
    assert not any(d.type.startswith("subscription.") for d in deliveries)
    [event, _] = await parse(polar, of_type(deliveries, "order.paid"))
    assert event.kind == EventKind.CHECKOUT_COMPLETED and event.checkout_id == checkout_id
    assert event.payment is not None and event.payment.details["billing_reason"] == "purchase"
    [grant] = await parse(polar, of_type(deliveries, "benefit_grant.created"))
    assert grant.grant is not None and grant.grant.provider_subscription_id is None


async def test_a_renewal_pays_the_subscription_not_the_checkout(
    fake: FakePolar, polar: PolarProvider
) -> None:
    checkout_id, polar_checkout, _ = await paid(fake, polar)
    sub_id = fake.checkouts[polar_checkout]["subscription_id"]
    order = fake.renew(sub_id)
    deliveries = fake.drain()
    assert [d.type for d in deliveries] == [
        "subscription.cycled",
        "order.created",
        "order.updated",
        "order.paid",
        "subscription.updated",
        "benefit_grant.cycled",
    ]
    assert order["metadata"]["billing_gql_checkout_id"] == checkout_id  # copied by Polar
    [event, _] = await parse(polar, of_type(deliveries, "order.paid"))
    assert event.kind == EventKind.PAYMENT_SUCCEEDED
    assert event.checkout_id is None and event.payment is not None
    assert event.payment.checkout_id is None and event.payment.provider_checkout_id is None
    assert event.payment.provider_subscription_id == sub_id
    assert event.payment.details["billing_reason"] == "subscription_cycle"
    assert await parse(polar, of_type(deliveries, "subscription.cycled")) == []
    [updated] = await parse(polar, of_type(deliveries, "subscription.updated"))
    assert updated.subscription is not None
    assert updated.subscription.current_period_start == datetime.fromisoformat(
        fake.subscriptions[sub_id]["current_period_start"]
    )
    [cycled] = await parse(polar, of_type(deliveries, "benefit_grant.cycled"))
    assert cycled.grant is not None and cycled.grant.granted


async def test_a_refund_reports_the_total_refunded(fake: FakePolar, polar: PolarProvider) -> None:
    _, _, deliveries = await paid(fake, polar)
    order_id = of_type(deliveries, "order.paid").data["id"]
    fake.refund(order_id, 900)
    fake.refund(order_id, 500)
    deliveries = fake.drain()
    refunds = [d for d in deliveries if d.type == "order.refunded"]
    totals = []
    for delivery in refunds:
        # Each order.refunded names every refund of the order (read from the API).
        events = await parse(polar, delivery)
        assert all(e.kind == EventKind.REFUND_SUCCEEDED and e.refund for e in events)
        assert {e.refund.payment_provider_ref for e in events if e.refund} == {order_id}
        assert sorted(e.refund.amount.minor for e in events if e.refund and e.refund.amount) == [
            500,
            900,
        ]
        totals.append(events[0].refund.amount_refunded if events[0].refund else None)
    assert totals == [Money(900, "USD"), Money(1400, "USD")]
    created = [d for d in deliveries if d.type == "refund.created"]
    ids = [(await parse(polar, d))[0].refund.provider_refund_id for d in created]  # type: ignore[union-attr]
    assert ids == list(fake.refunds)


async def test_subscription_events_carry_the_whole_subscription(
    fake: FakePolar, polar: PolarProvider
) -> None:
    checkout_id, polar_checkout, deliveries = await paid(fake, polar)
    sub = fake.checkouts[polar_checkout]["subscription_id"]
    [event] = await parse(polar, of_type(deliveries, "subscription.active"))
    snap = event.subscription
    assert event.kind == EventKind.SUBSCRIPTION_UPDATED and snap is not None
    assert snap.provider_subscription_id == sub and snap.status == SubscriptionStatus.ACTIVE
    assert snap.plan_ref == fake.subscriptions[sub]["product_id"]
    assert snap.currency == "USD" and snap.quantity is None
    assert snap.checkout_id == checkout_id and snap.customer_id == CUSTOMER.id
    assert snap.external_customer_id == CUSTOMER.external_id
    assert snap.provider_customer_id == fake.subscriptions[sub]["customer_id"]
    assert snap.current_period_end is not None and snap.current_period_start is not None
    assert event.checkout_id == checkout_id

    fake.cancel(sub, at_period_end=True)
    fake.uncancel(sub)
    fake.past_due(sub)
    fake.revoke(sub)
    seen: dict[str, Any] = {}
    for delivery in fake.drain():
        events = await parse(polar, delivery)
        if delivery.type.startswith("subscription."):
            [only] = events
            assert only.subscription is not None
            seen[delivery.type] = only.subscription
    assert seen["subscription.canceled"].status == SubscriptionStatus.CANCELED  # the last one
    assert seen["subscription.uncanceled"].cancel_at_period_end is False
    assert seen["subscription.past_due"].status == SubscriptionStatus.PAST_DUE
    revoked = seen["subscription.revoked"]
    assert revoked.status == SubscriptionStatus.CANCELED and revoked.ended_at is not None


async def test_a_pending_cancel_keeps_the_subscription_live(
    fake: FakePolar, polar: PolarProvider
) -> None:
    _, polar_checkout, _ = await paid(fake, polar)
    fake.cancel(fake.checkouts[polar_checkout]["subscription_id"], at_period_end=True)
    canceled = of_type(fake.drain(), "subscription.canceled")
    [event] = await parse(polar, canceled)
    assert event.subscription is not None
    assert event.subscription.status == SubscriptionStatus.ACTIVE
    assert event.subscription.cancel_at_period_end is True
    assert event.subscription.canceled_at is not None


def test_status_mapping_covers_polars_enum() -> None:
    polar_statuses = {
        "incomplete": SubscriptionStatus.INCOMPLETE,
        "incomplete_expired": SubscriptionStatus.EXPIRED,
        "trialing": SubscriptionStatus.TRIALING,
        "active": SubscriptionStatus.ACTIVE,
        "past_due": SubscriptionStatus.PAST_DUE,
        "canceled": SubscriptionStatus.CANCELED,
        "unpaid": SubscriptionStatus.EXPIRED,
        "paused": SubscriptionStatus.PAUSED,
    }
    assert dict(STATUS) == polar_statuses
    for raw, ours in polar_statuses.items():
        assert subscription_snapshot({"id": "s", "status": raw}).status == ours
    # Revoked: access is lost now, even if the object still says active.
    assert (
        subscription_snapshot({"id": "s", "status": "active"}, revoked=True).status
        == SubscriptionStatus.CANCELED
    )
    assert (
        subscription_snapshot({"id": "s", "status": "unpaid"}, revoked=True).status
        == SubscriptionStatus.EXPIRED
    )


async def test_benefit_grants_become_provider_grants(fake: FakePolar, polar: PolarProvider) -> None:
    _, polar_checkout, deliveries = await paid(fake, polar)
    created = of_type(deliveries, "benefit_grant.created")
    [event] = await parse(polar, created)
    grant = event.grant
    assert event.kind == EventKind.GRANT_UPDATED and grant is not None
    assert grant.granted and grant.grant_id == created.data["id"]
    assert grant.benefit_type == "feature_flag"
    assert grant.metadata == {"feature": "api", "limit": 1000}
    assert grant.external_customer_id == CUSTOMER.external_id
    assert grant.provider_subscription_id == fake.checkouts[polar_checkout]["subscription_id"]
    assert event.occurred_at == stamped(created)
    fake.update_grant(grant.grant_id, properties={})
    fake.revoke_grant(grant.grant_id)
    updated, revoked = fake.drain()
    [after_update] = await parse(polar, updated)
    assert after_update.grant is not None and after_update.grant.granted
    [after_revoke] = await parse(polar, revoked)
    assert revoked.type == "benefit_grant.revoked"
    assert after_revoke.grant is not None and not after_revoke.grant.granted


@pytest.mark.parametrize(
    "event_type",
    ["subscription.cycled", "customer.updated", "customer.state_changed", "order.created", "x.y"],
)
async def test_types_we_do_not_handle_are_ignored_with_a_log_line(
    fake: FakePolar, polar: PolarProvider, caplog: pytest.LogCaptureFixture, event_type: str
) -> None:
    fake.emit(event_type, {"id": "0b1c", "anything": True})
    [delivery] = fake.drain()
    caplog.set_level(logging.INFO, "billing_gql.provider.polar")
    assert await parse(polar, delivery) == []
    assert f"of type {event_type} ignored" in caplog.text


async def test_a_handled_type_without_data_is_unreadable(polar: PolarProvider) -> None:
    body = json.dumps({"type": "subscription.updated", "timestamp": "2026-01-01T00:00:00Z"})
    delivery = StoredDelivery(
        "polar", "w1", "subscription.updated", body.encode(), {}, datetime.now(UTC)
    )
    with pytest.raises(WebhookPayloadError):
        await polar.parse_webhook(delivery)
