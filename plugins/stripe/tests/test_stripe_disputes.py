"""Stripe disputes through the webhook pipeline: ``charge.dispute.created`` makes the payment
``disputed``, ``charge.dispute.closed`` ``dispute_won`` or ``dispute_lost`` (a lost one counts
once as a full refund, recorded as a refund of what was left: a ONE_TIME purchase ends);
repeats and late deliveries change nothing, and each change emits ``payment.disputed`` once.
``refundPayment`` accepts a payment whose dispute was won, not one disputed or lost."""

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
REFUNDS = """query($c: ID!) { payments(customerId: $c) { nodes { status
  amountRefunded { amount } refunds { status amount { amount } origin providerRefundId reason }
  } } }"""
REFUND = """mutation($i: RefundPaymentInput!) { refundPayment(input: $i) {
  refund { status amount { amount } payment { status amountRefunded { amount } } }
  userErrors { field code } } }"""


class Observer:
    """Collects the ``payment.disputed`` and ``payment.refunded`` events the app emits."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []
        self.refunded: list[DomainEvent] = []

    @hookimpl
    def on_billing_event(self, event: DomainEvent) -> None:
        if event.type == "payment.disputed":
            self.events.append(event)
        elif event.type == "payment.refunded":
            self.refunded.append(event)

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


async def refunds_of(app: Env, customer: str) -> dict[str, Any]:
    data = await app.gql(REFUNDS, c=customer)
    [node] = data["payments"]["nodes"]
    return dict(node)


async def refund(app: Env, **input: Any) -> dict[str, Any]:
    result = await app.api.gql(REFUND, {"i": input}, admin=True)
    assert result.status == 200 and not result.errors, result.body
    payload: dict[str, Any] = result.data["refundPayment"]
    return payload


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


async def test_a_lost_dispute_is_recorded_once_as_a_refund_of_what_was_left(
    app: Env, observer: Observer
) -> None:
    """A dashboard refund of 50.00 first, then a lost dispute: the dispute adds one refund of
    the 149.00 left (``dispute:<dp_…>``), listed in ``Payment.refunds``, with one
    ``payment.refunded`` beside ``payment.disputed``; repeated and late deliveries add none."""
    await make_plan(app, "lifetime", amount=19900, interval="ONE_TIME")
    customer = await make_customer(app)
    opened = await checkout(app, customer, "lifetime")
    app.fake.complete_checkout(app.fake.session_for(opened["id"])["id"])
    await app.deliver()
    payment = await payment_of(app, customer)
    app.fake.refund(payment["providerRef"], 5000)
    await app.deliver()
    assert (await refunds_of(app, customer))["status"] == "partially_refunded"
    assert len(observer.refunded) == 1

    dispute, _ = app.fake.open_dispute(payment["providerRef"])
    app.fake.update_dispute(dispute, "lost")
    created, closed = app.fake.drain()
    await app.deliver([created, closed, closed, created])
    lost = await refunds_of(app, customer)
    assert lost["status"] == "dispute_lost"
    assert lost["amountRefunded"] == {"amount": "199.00"}
    assert sorted(lost["refunds"], key=lambda r: r["amount"]["amount"]) == [
        {
            "status": "succeeded",
            "amount": {"amount": "149.00"},
            "origin": "PROVIDER",
            "providerRefundId": f"dispute:{dispute}",
            "reason": "dispute lost: fraudulent",
        },
        {
            "status": "succeeded",
            "amount": {"amount": "50.00"},
            "origin": "PROVIDER",
            "providerRefundId": next(iter(app.fake.refunds)),
            "reason": None,
        },
    ]
    assert observer.statuses() == ["disputed", "dispute_lost"]
    assert observer.events[-1].data["amount_refunded"] == {"amount": "199.00", "currency": "USD"}
    [_, by_dispute] = observer.refunded
    assert by_dispute.data["status"] == "dispute_lost"
    assert by_dispute.data["amount_refunded"] == {"amount": "199.00", "currency": "USD"}
    assert by_dispute.data["refund"]["provider_refund_id"] == f"dispute:{dispute}"
    assert by_dispute.data["refund"]["amount"] == {"amount": "149.00", "currency": "USD"}
    rows = await app.rows(
        "SELECT p.refunded_minor AS paid_back, c.refunded_minor AS checkout_back, "
        "(SELECT count(*) FROM refunds r WHERE r.payment_id = p.id) AS refunds "
        "FROM payments p JOIN checkouts c ON c.id = p.checkout_id"
    )
    assert rows == [{"paid_back": 19900, "checkout_back": 19900, "refunds": 2}]
    assert (await seats(app, customer))["enabled"] is False
    # Each refund, the dispute's too, has one credit note (the repeated deliveries none more).
    notes = await app.rows(
        "SELECT r.amount_minor, i.total_minor FROM refunds r "
        "JOIN invoices i ON i.id = r.credit_note_id ORDER BY r.amount_minor"
    )
    assert [(n["amount_minor"], n["total_minor"]) for n in notes] == [
        (5000, -5000),
        (14900, -14900),
    ]
    assert len(await app.rows("SELECT id FROM invoices WHERE kind = 'credit_note'")) == 2

    # Nothing is left to refund: refundPayment of a lost dispute is refused, nothing written.
    refused = await refund(app, paymentId=payment["id"])
    assert refused["refund"] is None
    assert [e["code"] for e in refused["userErrors"]] == ["PAYMENT_NOT_REFUNDABLE"]
    assert not [r for r in app.fake.requests if r.path == "/v1/refunds" and r.method == "POST"]


async def test_a_won_dispute_can_be_refunded_an_open_one_cannot(
    app: Env, observer: Observer
) -> None:
    customer, sub = await subscribed(app)
    payment = await payment_of(app, customer)
    dispute, _ = app.fake.open_dispute(payment["providerRef"])
    await app.deliver()
    refused = await refund(app, paymentId=payment["id"], amount="5.00")
    assert refused["refund"] is None
    assert [e["code"] for e in refused["userErrors"]] == ["PAYMENT_NOT_REFUNDABLE"]
    assert await app.rows("SELECT id FROM refunds") == []

    app.fake.update_dispute(dispute, "won")
    await app.deliver()
    assert (await payment_of(app, customer))["status"] == "dispute_won"
    done = await refund(app, paymentId=payment["id"], amount="5.00", idempotencyKey="won-1")
    assert done["userErrors"] == []
    assert done["refund"] == {
        "status": "succeeded",
        "amount": {"amount": "5.00"},
        "payment": {"status": "dispute_won", "amountRefunded": {"amount": "5.00"}},
    }
    [at_stripe] = app.fake.refunds.values()
    assert at_stripe["amount"] == 500
    await app.deliver()  # Stripe's own reports of that refund: not counted again
    listed = await refunds_of(app, customer)
    assert listed["status"] == "dispute_won"
    assert listed["amountRefunded"] == {"amount": "5.00"}
    assert [r["providerRefundId"] for r in listed["refunds"]] == [at_stripe["id"]]
    assert len(observer.refunded) == 1
    assert observer.statuses() == ["disputed", "dispute_won"]
    assert sub["status"] == "ACTIVE"
