"""Every Stripe event type we use, as the fake sends it, mapped to normalized events."""

from __future__ import annotations

import copy
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from stripe_helpers import CUSTOMER, checkout_request, plan_info

from billing_gql import (
    BillingEvent,
    BillingInterval,
    EventKind,
    Money,
    ProviderUnavailable,
    StoredDelivery,
    SubscriptionRef,
    SubscriptionStatus,
    WebhookPayloadError,
)
from billing_gql_stripe.mapping import subscription_snapshot
from billing_gql_stripe.plugin import StripeProvider
from billing_gql_stripe.testing import FakeStripe


async def parse(stripe: StripeProvider, event: Mapping[str, Any]) -> Sequence[BillingEvent]:
    """What the provider makes of ``event`` once stored in the inbox."""
    return await stripe.parse_webhook(stored(event))


def stored(event: Mapping[str, Any]) -> StoredDelivery:
    return StoredDelivery(
        provider="stripe",
        event_id=str(event["id"]),
        event_type=str(event["type"]),
        body=json.dumps(event).encode(),
        headers={},
        received_at=datetime.now(UTC),
    )


def of_type(events: Sequence[Mapping[str, Any]], event_type: str) -> dict[str, Any]:
    found = [e for e in events if e["type"] == event_type]
    assert len(found) == 1, [e["type"] for e in events]
    return dict(found[0])


def created(event: Mapping[str, Any]) -> datetime:
    return datetime.fromtimestamp(event["created"], UTC)


async def checkout(
    fake: FakeStripe, stripe: StripeProvider, *, trial_days: int = 0, one_time: bool = False
) -> tuple[str, str]:
    """(our checkout id, session id) of a fresh Stripe checkout."""
    price = fake.create_price(unit_amount=2900, interval=None if one_time else "month")
    interval = BillingInterval.ONE_TIME if one_time else BillingInterval.MONTH
    request = checkout_request(
        price,
        checkout_id=str(uuid.uuid4()),
        plan=plan_info(price, interval=interval, trial_days=trial_days),
    )
    session = await stripe.create_checkout(request)
    return request.checkout_id, session.provider_checkout_id or ""


async def test_subscription_checkout_completed(fake: FakeStripe, stripe: StripeProvider) -> None:
    checkout_id, session_id = await checkout(fake, stripe)
    events = fake.complete_checkout(session_id)
    assert [e["type"] for e in events] == [
        "customer.created",
        "customer.subscription.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "checkout.session.completed",
    ]
    completed = of_type(events, "checkout.session.completed")
    assert completed["api_version"] == "2025-03-31.basil"
    # Stripe names the subscription; the plugin reads it.
    assert isinstance(completed["data"]["object"]["subscription"], str)
    [event] = await parse(stripe, completed)
    session = fake.sessions[session_id]
    assert event.kind == EventKind.CHECKOUT_COMPLETED
    assert event.occurred_at == created(completed)
    assert event.checkout_id == checkout_id and event.customer_id == CUSTOMER.id
    assert event.provider_checkout_id == session_id
    assert event.provider_customer_id == session["customer"]
    assert event.payment is None  # invoice.paid brings the money
    snap = event.subscription
    assert snap is not None
    assert snap.provider_subscription_id == session["subscription"]
    assert snap.status == SubscriptionStatus.ACTIVE
    assert snap.checkout_id == checkout_id and snap.customer_id == CUSTOMER.id
    assert snap.current_period_start is not None and snap.current_period_end is not None
    assert snap.current_period_end.month != snap.current_period_start.month
    price_id = fake.subscriptions[session["subscription"]]["items"]["data"][0]["price"]["id"]
    assert snap.plan_ref == price_id
    assert snap.quantity == 1 and snap.currency == "USD"
    assert any(r.method == "GET" and r.path.startswith("/v1/subscriptions/") for r in fake.requests)


async def test_subscription_created_and_the_first_invoice(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    checkout_id, session_id = await checkout(fake, stripe)
    events = fake.complete_checkout(session_id)
    sub_event = of_type(events, "customer.subscription.created")
    [event] = await parse(stripe, sub_event)
    assert event.kind == EventKind.SUBSCRIPTION_UPDATED
    assert event.checkout_id == checkout_id and event.customer_id == CUSTOMER.id
    assert event.subscription is not None
    assert (
        event.subscription.plan_ref
        == sub_event["data"]["object"]["items"]["data"][0]["price"]["id"]
    )

    paid = of_type(events, "invoice.paid")
    [payment_event, mirrored] = await parse(stripe, paid)
    invoice = paid["data"]["object"]
    # The invoice itself, to be mirrored: Stripe's id, number, URLs and amounts.
    assert mirrored.kind == EventKind.INVOICE_UPDATED and mirrored.invoice is not None
    copy_of = mirrored.invoice
    assert copy_of.provider_invoice_id == invoice["id"] and copy_of.status == "PAID"
    assert copy_of.number == invoice["number"]
    assert copy_of.hosted_url == invoice["hosted_invoice_url"]
    assert copy_of.pdf_url == invoice["invoice_pdf"]
    assert copy_of.total == copy_of.amount_paid == Money(2900, "USD")
    assert copy_of.amount_due == Money(0, "USD")
    assert copy_of.checkout_id == checkout_id and copy_of.customer_id == CUSTOMER.id
    assert [(line.kind, line.amount, line.unit_amount) for line in copy_of.lines] == [
        ("PLAN", Money(2900, "USD"), Money(2900, "USD"))
    ]
    assert payment_event.kind == EventKind.PAYMENT_SUCCEEDED
    payment = payment_event.payment
    assert payment is not None
    assert payment.provider_ref == invoice["id"]
    assert payment.amount == Money(2900, "USD") and payment.status == "succeeded"
    assert payment.checkout_id == checkout_id  # the first invoice pays for the checkout
    assert payment.provider_subscription_id == fake.sessions[session_id]["subscription"]
    assert payment.customer_id == CUSTOMER.id
    assert payment_event.occurred_at == created(paid)


async def test_trial_checkout(fake: FakeStripe, stripe: StripeProvider) -> None:
    _, session_id = await checkout(fake, stripe, trial_days=14)
    events = fake.complete_checkout(session_id)
    [event] = await parse(stripe, of_type(events, "checkout.session.completed"))
    assert event.subscription is not None
    assert event.subscription.status == SubscriptionStatus.TRIALING
    assert event.subscription.trial_end == event.subscription.current_period_end
    # The $0 trial invoice is no payment (only the invoice, mirrored).
    [trial_invoice] = await parse(stripe, of_type(events, "invoice.paid"))
    assert trial_invoice.kind == EventKind.INVOICE_UPDATED
    assert trial_invoice.invoice is not None and trial_invoice.invoice.total == Money(0, "USD")


async def test_renewal_and_failed_payment(fake: FakeStripe, stripe: StripeProvider) -> None:
    _, session_id = await checkout(fake, stripe)
    fake.complete_checkout(session_id)
    sub_id = fake.sessions[session_id]["subscription"]
    renewal = fake.renew(sub_id)
    [updated] = await parse(stripe, of_type(renewal, "customer.subscription.updated"))
    assert (
        updated.subscription is not None
        and updated.subscription.status == SubscriptionStatus.ACTIVE
    )
    [paid, _] = await parse(stripe, of_type(renewal, "invoice.paid"))
    assert paid.payment is not None and paid.payment.checkout_id is None
    assert paid.checkout_id is None

    failing = fake.fail_payment(sub_id)
    failed_invoice = of_type(failing, "invoice.payment_failed")
    [failed, open_invoice] = await parse(stripe, failed_invoice)
    assert open_invoice.invoice is not None and open_invoice.invoice.status == "OPEN"
    assert open_invoice.invoice.amount_due == Money(2900, "USD")
    assert failed.kind == EventKind.PAYMENT_FAILED
    assert failed.payment is not None and failed.payment.status == "failed"
    assert failed.payment.amount == Money(2900, "USD")
    assert failed.payment.provider_ref != failed_invoice["data"]["object"]["id"]
    assert failed.payment.provider_subscription_id == sub_id
    [past_due] = await parse(stripe, of_type(failing, "customer.subscription.updated"))
    assert past_due.subscription is not None
    assert past_due.subscription.status == SubscriptionStatus.PAST_DUE


async def test_subscription_lifecycle_events(fake: FakeStripe, stripe: StripeProvider) -> None:
    _, session_id = await checkout(fake, stripe)
    fake.complete_checkout(session_id)
    sub_id = fake.sessions[session_id]["subscription"]
    fake.outbox.clear()

    [pending] = await parse(stripe, fake.cancel(sub_id, at_period_end=True)[0])
    assert pending.subscription is not None and pending.subscription.cancel_at_period_end
    assert pending.subscription.status == SubscriptionStatus.ACTIVE
    paused_events = fake.pause(sub_id)
    assert paused_events[0]["type"] == "customer.subscription.paused"
    [paused] = await parse(stripe, paused_events[0])
    assert (
        paused.subscription is not None and paused.subscription.status == SubscriptionStatus.PAUSED
    )

    fake.outbox.clear()
    await stripe.resume_subscription(subscription_ref(sub_id))
    types = [e["type"] for e in fake.outbox]
    assert types == ["customer.subscription.resumed", "customer.subscription.updated"]
    [resumed] = await parse(stripe, fake.outbox[0])
    assert (
        resumed.subscription is not None
        and resumed.subscription.status == SubscriptionStatus.ACTIVE
    )

    [deleted] = await parse(stripe, fake.cancel(sub_id)[0])
    assert deleted.kind == EventKind.SUBSCRIPTION_UPDATED
    assert deleted.subscription is not None
    assert deleted.subscription.status == SubscriptionStatus.CANCELED
    assert deleted.subscription.ended_at is not None


def subscription_ref(sub_id: str) -> SubscriptionRef:
    return SubscriptionRef("ours", sub_id, CUSTOMER, plan_info("p"), 1, "USD")


async def test_one_time_checkout_carries_the_payment(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    checkout_id, session_id = await checkout(fake, stripe, one_time=True)
    events = fake.complete_checkout(session_id)
    assert "customer.subscription.created" not in [e["type"] for e in events]
    [event] = await parse(stripe, of_type(events, "checkout.session.completed"))
    intent = fake.sessions[session_id]["payment_intent"]
    assert event.kind == EventKind.CHECKOUT_COMPLETED and event.subscription is None
    assert event.payment is not None
    assert event.payment.provider_ref == intent
    assert event.payment.amount == Money(2900, "USD")
    assert event.payment.checkout_id == checkout_id


async def test_async_payments(fake: FakeStripe, stripe: StripeProvider) -> None:
    _, session_id = await checkout(fake, stripe, one_time=True)
    events = fake.complete_checkout(session_id, async_payment=True)
    assert await parse(stripe, of_type(events, "checkout.session.completed")) == []
    [paid] = await parse(
        stripe,
        of_type(fake.settle_async_payment(session_id), "checkout.session.async_payment_succeeded"),
    )
    assert paid.kind == EventKind.CHECKOUT_COMPLETED and paid.payment is not None

    checkout_id, other = await checkout(fake, stripe, one_time=True)
    fake.complete_checkout(other, async_payment=True)
    failing = fake.settle_async_payment(other, succeeded=False)
    [failed] = await parse(stripe, of_type(failing, "checkout.session.async_payment_failed"))
    assert failed.kind == EventKind.CHECKOUT_FAILED
    assert failed.checkout_id == checkout_id and failed.provider_checkout_id == other


async def test_expired_checkout(fake: FakeStripe, stripe: StripeProvider) -> None:
    checkout_id, session_id = await checkout(fake, stripe)
    [event] = await parse(stripe, fake.expire_checkout(session_id)[0])
    assert event.kind == EventKind.CHECKOUT_EXPIRED and event.checkout_id == checkout_id


async def test_refunds_point_at_the_payment_we_recorded(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    _, session_id = await checkout(fake, stripe)
    fake.complete_checkout(session_id)
    invoice_id = fake.sessions[session_id]["invoice"]
    [partial] = await parse(stripe, fake.refund(invoice_id, 900)[0])
    assert partial.kind == EventKind.REFUND_SUCCEEDED and partial.refund is not None
    assert partial.refund.payment_provider_ref == invoice_id
    assert partial.refund.amount_refunded == Money(900, "USD")
    assert partial.refund.amount == Money(900, "USD")
    first_id = partial.refund.provider_refund_id
    assert first_id is not None and first_id in fake.refunds
    # charge.refunded names every refund of the charge; refund.created only the new one.
    charge_refunded, refund_created = fake.refund(invoice_id)
    both = await parse(stripe, charge_refunded)
    assert [e.refund.amount for e in both if e.refund] == [Money(900, "USD"), Money(2000, "USD")]
    assert all(e.refund and e.refund.amount_refunded == Money(2900, "USD") for e in both)
    [created] = await parse(stripe, refund_created)
    assert created.refund is not None and created.refund.amount == Money(2000, "USD")
    assert created.refund.payment_provider_ref == invoice_id
    assert created.refund.provider_refund_id == both[1].refund.provider_refund_id  # type: ignore[union-attr]

    _, one_time = await checkout(fake, stripe, one_time=True)
    fake.complete_checkout(one_time)
    intent = fake.sessions[one_time]["payment_intent"]
    [refund] = await parse(stripe, fake.refund(intent)[0])
    assert refund.refund is not None and refund.refund.payment_provider_ref == intent


async def test_other_event_types_are_ignored_and_logged(
    fake: FakeStripe, stripe: StripeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "billing_gql.provider.stripe")
    fake.create_customer(email="x@y.z")
    event = fake.outbox[-1]
    assert event["type"] == "customer.created"
    assert await parse(stripe, event) == []
    assert f"stripe event {event['id']} of type customer.created ignored" in caplog.text


async def test_a_signed_event_without_an_object_is_a_payload_error(stripe: StripeProvider) -> None:
    with pytest.raises(WebhookPayloadError):
        await parse(stripe, {"id": "evt_1", "type": "invoice.paid", "created": 1, "data": {}})


# -- mapping details ---------------------------------------------------------------------------


def subscription(fake: FakeStripe) -> dict[str, Any]:
    price = fake.create_price(unit_amount=100)
    return copy.deepcopy(
        fake._new_subscription(fake.create_customer(), fake.prices[price], 2, {}, None)
    )


@pytest.mark.parametrize(
    ("status", "ours"),
    [
        ("incomplete", SubscriptionStatus.INCOMPLETE),
        ("incomplete_expired", SubscriptionStatus.EXPIRED),
        ("trialing", SubscriptionStatus.TRIALING),
        ("active", SubscriptionStatus.ACTIVE),
        ("past_due", SubscriptionStatus.PAST_DUE),
        ("unpaid", SubscriptionStatus.EXPIRED),
        ("canceled", SubscriptionStatus.CANCELED),
        ("paused", SubscriptionStatus.PAUSED),
    ],
)
def test_statuses(fake: FakeStripe, status: str, ours: SubscriptionStatus) -> None:
    sub = subscription(fake)
    sub["status"] = status
    assert subscription_snapshot(sub).status == ours


def test_periods_from_items_and_from_older_api_versions(fake: FakeStripe) -> None:
    sub = subscription(fake)
    item = sub["items"]["data"][0]
    snap = subscription_snapshot(sub)
    assert snap.current_period_start == datetime.fromtimestamp(item["current_period_start"], UTC)
    assert snap.quantity == 2
    legacy = copy.deepcopy(sub)
    for key in ("current_period_start", "current_period_end"):
        legacy[key] = legacy["items"]["data"][0].pop(key)
    assert subscription_snapshot(legacy).current_period_end == snap.current_period_end


def test_cancel_at_the_period_end_counts_as_cancel_at_period_end(fake: FakeStripe) -> None:
    sub = subscription(fake)
    sub["cancel_at"] = sub["items"]["data"][0]["current_period_end"]
    assert subscription_snapshot(sub).cancel_at_period_end
    sub["cancel_at"] += 86400
    assert not subscription_snapshot(sub).cancel_at_period_end


async def test_legacy_invoice_shape(fake: FakeStripe, stripe: StripeProvider) -> None:
    _, session_id = await checkout(fake, stripe)
    events = fake.complete_checkout(session_id)
    paid = copy.deepcopy(of_type(events, "invoice.paid"))
    invoice = paid["data"]["object"]
    details = invoice.pop("parent")["subscription_details"]
    invoice["subscription"] = details["subscription"]
    invoice["subscription_details"] = {"metadata": details["metadata"]}
    [event, mirrored] = await parse(stripe, paid)
    assert mirrored.invoice is not None
    assert mirrored.invoice.provider_subscription_id == details["subscription"]
    assert event.payment is not None
    assert event.payment.provider_subscription_id == details["subscription"]
    assert event.customer_id == CUSTOMER.id


async def test_fetching_the_subscription_when_stripe_is_down_raises_to_retry(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    _, session_id = await checkout(fake, stripe)
    completed = of_type(fake.complete_checkout(session_id), "checkout.session.completed")
    fake.fail_next(10, status=503)
    with pytest.raises(ProviderUnavailable):
        await parse(stripe, completed)
