"""Stripe disputes through the webhook pipeline: ``charge.dispute.created`` makes the payment
``disputed``, ``charge.dispute.closed`` ``dispute_won`` or ``dispute_lost`` (a lost one counts as
a full refund: a ONE_TIME purchase ends); repeats and late deliveries change nothing, and each
change emits ``payment.disputed`` once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from test_stripe_e2e import Env, checkout, get_checkout, make_customer, make_plan, seats, subscribed

import billing_gql_stripe.plugin
from billing_gql import DisputeInfo, DomainEvent, EventKind, Money, StoredDelivery, hookimpl
from billing_gql.testing import TestDatabase
from billing_gql_stripe.testing import FakeStripe

PAYMENTS = """query($c: ID!) { payments(customerId: $c) { edges { node {
  id providerRef status amount { amount currency } amountRefunded { amount currency } } } } }"""


class Observer:
    """Collects the ``payment.disputed`` events the app emits."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    @hookimpl
    def on_billing_event(self, event: DomainEvent) -> None:
        if event.type == "payment.disputed":
            self.events.append(event)

    def statuses(self) -> list[str]:
        return [str(e.data["status"]) for e in self.events]


@pytest.fixture
def observer() -> Observer:
    return Observer()


@pytest.fixture
async def app(make_api, clean_database: TestDatabase, observer: Observer) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    """The app over HTTP on a fake Stripe, with the observer registered."""
    fake = FakeStripe()
    async with make_api(
        plugins=[billing_gql_stripe.plugin, observer],
        env=fake.env(),
        transports={"stripe": fake.transport()},
    ) as api:
        yield Env(api, fake, clean_database.url, None)  # type: ignore[arg-type]


async def payment_of(app: Env, customer: str) -> dict[str, Any]:
    data = await app.gql(PAYMENTS, c=customer)
    [edge] = data["payments"]["edges"]
    node: dict[str, Any] = edge["node"]
    return node


async def test_a_lost_dispute_ends_a_one_time_purchase_like_a_full_refund(
    app: Env, observer: Observer
) -> None:
    await make_plan(app, "lifetime", amount=19900, interval="ONE_TIME")
    customer = await make_customer(app)
    opened = await checkout(app, customer, "lifetime")
    app.fake.complete_checkout(app.fake.session_for(opened["id"])["id"])
    await app.deliver()
    assert (await seats(app, customer))["enabled"] is True
    payment = await payment_of(app, customer)

    dispute, _ = app.fake.open_dispute(payment["providerRef"])
    [created] = app.fake.drain()
    await app.deliver([created, created])  # a repeat changes nothing
    disputed = await payment_of(app, customer)
    assert disputed["status"] == "disputed"
    assert disputed["amountRefunded"] == {"amount": "0.00", "currency": "USD"}
    assert (await seats(app, customer))["enabled"] is True  # open: nothing decided yet
    assert observer.statuses() == ["disputed"]

    app.fake.update_dispute(dispute, "under_review")
    [reviewed] = app.fake.drain()  # held back: it arrives after the dispute closed
    app.fake.update_dispute(dispute, "lost")
    [closed] = app.fake.drain()
    await app.deliver([closed])
    lost = await payment_of(app, customer)
    assert lost["status"] == "dispute_lost"
    assert lost["amountRefunded"] == lost["amount"] == {"amount": "199.00", "currency": "USD"}
    assert (await seats(app, customer))["enabled"] is False
    assert observer.statuses() == ["disputed", "dispute_lost"]
    [event] = observer.events[1:]
    assert event.data["payment_id"] == lost["id"]
    assert event.data["amount_refunded"] == {"amount": "199.00", "currency": "USD"}
    assert event.data["dispute"]["id"] == dispute
    assert event.data["dispute"]["reason"] == "fraudulent"

    await app.deliver([reviewed, created, closed])  # late and repeated: no regression
    assert await payment_of(app, customer) == lost
    assert observer.statuses() == ["disputed", "dispute_lost"]
    done = await get_checkout(app, opened["id"])
    assert done["status"] == "COMPLETED"
    rows = await app.rows("SELECT refunded_minor FROM checkouts WHERE id = $1::uuid", opened["id"])
    assert rows == [{"refunded_minor": 19900}]


async def test_a_won_dispute_keeps_the_money_and_the_subscription(
    app: Env, observer: Observer
) -> None:
    customer, sub = await subscribed(app)
    invoice = app.fake.subscriptions[sub["providerSubscriptionId"]]["latest_invoice"]
    payment = await payment_of(app, customer)
    assert payment["providerRef"] == invoice
    dispute, _ = app.fake.open_dispute(invoice, reason="product_not_received")
    app.fake.update_dispute(dispute, "won")
    created, closed = app.fake.drain()
    await app.deliver([closed, created])  # out of order: the closed state stays
    won = await payment_of(app, customer)
    assert won["status"] == "dispute_won"
    assert won["amountRefunded"] == {"amount": "0.00", "currency": "USD"}
    assert observer.statuses() == ["dispute_won"]
    assert (await seats(app, customer))["enabled"] is True
    rows = await app.rows(
        "SELECT status FROM webhook_deliveries WHERE provider = 'stripe' "
        "AND event_type LIKE 'charge.dispute.%' ORDER BY event_type"
    )
    assert [r["status"] for r in rows] == ["applied", "applied"]


async def test_a_dispute_of_an_unknown_payment_is_kept_and_retried(app: Env) -> None:
    fake: FakeStripe = app.fake
    customer_id = fake.create_customer(email="x@example.com")
    intent = fake._new_payment(customer_id, 500, "usd", {}, succeeded=True)  # not ours
    fake.drain()
    fake.open_dispute(intent["id"])
    await app.deliver()
    rows = await app.rows(
        "SELECT status FROM webhook_deliveries WHERE event_type = 'charge.dispute.created'"
    )
    assert rows == [{"status": "failed"}]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("warning_needs_response", "open"),
        ("needs_response", "open"),
        ("under_review", "open"),
        ("appeal_under_review", "open"),
        ("won", "won"),
        ("warning_closed", "won"),
        ("prevented", "won"),
        ("lost", "lost"),
    ],
)
async def test_the_outcome_is_read_from_the_disputes_status(
    stripe: Any, fake: FakeStripe, status: str, outcome: str
) -> None:
    """Whatever the event type: a ``charge.dispute.updated`` may carry a closed dispute."""
    customer_id = fake.create_customer(email="x@example.com")
    intent = fake._new_payment(customer_id, 500, "usd", {}, succeeded=True)
    dispute_id, [event] = fake.open_dispute(intent["id"], reason="duplicate")
    event["type"] = "charge.dispute.updated"
    event["data"]["object"]["status"] = status
    [parsed] = await stripe.parse_webhook(
        StoredDelivery(
            provider="stripe",
            event_id=str(event["id"]),
            event_type=str(event["type"]),
            body=json.dumps(event).encode(),
            headers={},
            received_at=datetime.now(UTC),
        )
    )
    assert parsed.kind == EventKind.DISPUTE_UPDATED
    assert parsed.dispute == DisputeInfo(
        payment_provider_ref=intent["id"],  # a one-time payment: its payment intent
        provider_dispute_id=dispute_id,
        status=outcome,
        amount=Money(500, "USD"),
        reason="duplicate",
    )
