"""refundPayment through Stripe, end to end: GraphQL → the plugin → the fake Stripe's refunds
endpoint → its signed deliveries → one refund recorded, whichever path reports it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import pytest

import billing_gql_stripe.plugin
from billing_gql import DomainEvent, UserInputError, hookimpl
from billing_gql.refunds.service import RefundInput, RefundOutcome, refund_payment
from billing_gql.runtime import Runtime
from billing_gql.settings import Settings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql_stripe.testing import FakeStripe, StripeDelivery

ERRORS = "userErrors { field message code }"
REFUND_FIELDS = """id status amount { amount } origin providerRefundId failureReason
  creditNote { id }
  payment { id status amountRefunded { amount currency } }"""
REFUND = f"""mutation($i: RefundPaymentInput!) {{ refundPayment(input: $i) {{
  refund {{ {REFUND_FIELDS} }} {ERRORS} }} }}"""
PAYMENTS = f"""query($c: ID!) {{ payments(customerId: $c) {{ nodes {{ id providerRef status
  amountRefunded {{ amount }} refunds {{ {REFUND_FIELDS} }} }} }} }}"""


class Recorder:
    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    @hookimpl
    def on_billing_event(self, event: DomainEvent) -> None:
        self.events.append(event)

    def refunded(self) -> list[DomainEvent]:
        return [e for e in self.events if e.type == "payment.refunded"]


@dataclass
class Env:
    api: ApiClient
    fake: FakeStripe
    db_url: str
    settings: Settings
    recorder: Recorder

    async def gql(self, query: str, **variables: Any) -> Any:
        return await self.api.admin(query, variables)

    async def refund(self, **input: Any) -> dict[str, Any]:
        result = await self.api.gql(REFUND, {"i": input}, admin=True)
        assert result.status == 200 and not result.errors, result.body
        payload: dict[str, Any] = result.data["refundPayment"]
        return payload

    async def deliver(self, deliveries: Sequence[StripeDelivery] | None = None) -> None:
        for d in self.fake.drain() if deliveries is None else deliveries:
            response = await self.api.post_webhook("stripe", d.body, d.headers)
            assert response.status_code == 200, response.text

    async def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.db_url)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    def refund_posts(self) -> list[Any]:
        return [r for r in self.fake.requests if r.method == "POST" and r.path == "/v1/refunds"]


@pytest.fixture
async def env(make_api, clean_database: TestDatabase, app_settings: Settings) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    fake = FakeStripe()
    recorder = Recorder()
    async with make_api(
        plugins=[billing_gql_stripe.plugin, recorder],
        env=fake.env(),
        transports={"stripe": fake.transport()},
    ) as api:
        settings = replace(app_settings, plugins=replace(app_settings.plugins, env=fake.env()))
        yield Env(api, fake, clean_database.url, settings, recorder)


async def paid(env: Env) -> tuple[str, dict[str, Any], str]:
    """A customer subscribed to a 29.00 USD monthly plan through Stripe: (customer id,
    subscription, our payment id)."""
    price = env.fake.create_price(unit_amount=2900, interval="month")
    await env.gql(
        f"mutation($i: CreatePlanInput!) {{ createPlan(input: $i) {{ plan {{ id }} {ERRORS} }} }}",
        i={
            "code": "pro",
            "name": "Pro",
            "interval": "MONTH",
            "prices": [{"currency": "USD", "amount": "29.00"}],
            "features": [{"feature": "seats", "limit": "5"}],
            "providerRefs": [{"provider": "stripe", "ref": price, "currency": "USD"}],
        },
    )
    data = await env.gql(
        f"mutation($i: UpsertCustomerInput!) {{ upsertCustomer(input: $i) {{ customer {{ id }} {ERRORS} }} }}",
        i={"externalId": f"usr_{uuid.uuid4().hex[:6]}", "email": "ann@example.com"},
    )
    customer = str(data["upsertCustomer"]["customer"]["id"])
    data = await env.gql(
        "mutation($i: CreateCheckoutInput!) { createCheckout(input: $i) { checkout { id } "
        f"{ERRORS} }} }}",
        i={
            "customerId": customer,
            "planCode": "pro",
            "provider": "stripe",
            "successUrl": "https://app.example/ok",
        },
    )
    checkout_id = data["createCheckout"]["checkout"]["id"]
    env.fake.complete_checkout(env.fake.session_for(checkout_id)["id"])
    await env.deliver()
    data = await env.gql(
        "query($c: ID!) { subscriptions(customerId: $c) { nodes { id status "
        "providerSubscriptionId } } }",
        c=customer,
    )
    [sub] = data["subscriptions"]["nodes"]
    [payment] = await payments(env, customer)
    return customer, sub, payment["id"]


async def payments(env: Env, customer: str) -> list[dict[str, Any]]:
    data = await env.gql(PAYMENTS, c=customer)
    nodes: list[dict[str, Any]] = data["payments"]["nodes"]
    return nodes


async def test_a_refund_reaches_stripe_once_even_when_retried(env: Env) -> None:
    customer, sub, payment_id = await paid(env)
    args = {"paymentId": payment_id, "amount": "9.00", "reason": "late", "idempotencyKey": "r-1"}
    first = await env.refund(**args)
    assert first["userErrors"] == []
    refund = first["refund"]
    assert refund["status"] == "succeeded" and refund["amount"]["amount"] == "9.00"
    assert refund["payment"]["status"] == "partially_refunded"
    assert refund["payment"]["amountRefunded"]["amount"] == "9.00"
    assert refund["creditNote"]["id"]
    again = await env.refund(**args)
    assert again["userErrors"] == [] and again["refund"]["id"] == refund["id"]

    [post] = env.refund_posts()
    invoice = env.fake.subscriptions[sub["providerSubscriptionId"]]["latest_invoice"]
    [paid_by] = [p for p in env.fake.invoice_payments.values() if p["invoice"] == invoice]
    intent = paid_by["payment"]["payment_intent"]
    assert post.params["payment_intent"] == intent
    assert post.params["amount"] == "900"
    assert post.params["metadata"] == {
        "billing_gql_refund_id": refund["id"],
        "billing_gql_reason": "late",
    }
    assert post.headers["idempotency-key"] == f"billing-gql-refund-{refund['id']}"
    [at_stripe] = env.fake.refunds.values()
    assert refund["providerRefundId"] == at_stripe["id"] and at_stripe["amount"] == 900

    # Stripe's own deliveries about this refund (charge.refunded, refund.created), twice:
    # the refund we recorded is not counted again.
    deliveries = env.fake.drain()
    assert {d.type for d in deliveries} == {"charge.refunded", "refund.created"}
    await env.deliver(deliveries + deliveries)
    [listed] = await payments(env, customer)
    assert listed["amountRefunded"]["amount"] == "9.00"
    assert [r["id"] for r in listed["refunds"]] == [refund["id"]]
    assert len(env.recorder.refunded()) == 1

    # More than is left (20.00): refused, Stripe never asked, nothing written.
    over = await env.refund(paymentId=payment_id, amount="20.01")
    assert [e["code"] for e in over["userErrors"]] == ["REFUND_EXCEEDS_PAYMENT"]
    assert over["refund"] is None and len(env.refund_posts()) == 1
    assert len(await env.rows("SELECT id FROM refunds")) == 1

    rest = await env.refund(paymentId=payment_id)
    assert rest["refund"]["amount"]["amount"] == "20.00"
    assert rest["refund"]["payment"]["status"] == "refunded"
    assert rest["refund"]["payment"]["amountRefunded"]["amount"] == "29.00"
    await env.deliver()
    [listed] = await payments(env, customer)
    assert listed["amountRefunded"]["amount"] == "29.00" and len(listed["refunds"]) == 2
    assert len(env.recorder.refunded()) == 2


CREDIT_NOTE = """query($id: ID!) { invoice(id: $id) { id number status isCreditNote
  total { amount currency } amountPaid { amount } lines { kind amount { amount } }
  creditOf { id } } }"""


async def test_a_refund_answers_its_numbered_credit_note_once(env: Env) -> None:
    customer, sub, payment_id = await paid(env)
    answer = await env.refund(paymentId=payment_id, amount="9.00", idempotencyKey="cn-1")
    assert answer["userErrors"] == []
    note = answer["refund"]["creditNote"]
    assert note is not None
    data = await env.gql(CREDIT_NOTE, id=note["id"])
    invoice = data["invoice"]
    assert invoice["isCreditNote"] is True and invoice["status"] == "PAID"
    assert invoice["total"] == {"amount": "-9.00", "currency": "USD"}
    assert [(line["kind"], line["amount"]["amount"]) for line in invoice["lines"]] == [
        ("CREDIT", "-9.00")
    ]
    assert invoice["number"] and invoice["number"].startswith("INV-")

    # Stripe's deliveries about the refund, twice, and the mutation retried: no second note.
    deliveries = env.fake.drain()
    await env.deliver(deliveries + deliveries)
    again = await env.refund(paymentId=payment_id, amount="9.00", idempotencyKey="cn-1")
    assert again["refund"]["creditNote"]["id"] == note["id"]
    notes = await env.rows("SELECT id, total_minor FROM invoices WHERE kind = 'credit_note'")
    assert notes == [{"id": uuid.UUID(note["id"]), "total_minor": -900}]
    [listed] = await payments(env, customer)
    assert [r["creditNote"]["id"] for r in listed["refunds"]] == [note["id"]]
    created = [
        e
        for e in env.recorder.events
        if e.type == "invoice.created" and e.data["kind"] == "credit_note"
    ]
    assert [e.data["invoice_id"] for e in created] == [note["id"]]

    # A refund made in Stripe's dashboard, delivered twice, gets its own (one) note.
    invoice_id = env.fake.subscriptions[sub["providerSubscriptionId"]]["latest_invoice"]
    made = [env.fake.delivery(e) for e in env.fake.refund(invoice_id, 500)]
    env.fake.drain()
    await env.deliver(made + made)
    rows = await env.rows(
        "SELECT r.amount_minor, i.total_minor, i.number FROM refunds r "
        "JOIN invoices i ON i.id = r.credit_note_id ORDER BY r.amount_minor DESC"
    )
    assert [(r["amount_minor"], r["total_minor"]) for r in rows] == [(900, -900), (500, -500)]
    assert rows[0]["number"] != rows[1]["number"]
    assert len(await env.rows("SELECT id FROM invoices WHERE kind = 'credit_note'")) == 2


async def test_identical_requests_racing_refund_once(env: Env) -> None:
    customer, _, payment_id = await paid(env)
    runtime = await Runtime.start(
        env.settings,
        extra_plugins=[billing_gql_stripe.plugin],
        transports={"stripe": env.fake.transport()},
        apply_migrations=False,
    )
    try:
        request = RefundInput(payment_id=uuid.UUID(payment_id))
        answers = await asyncio.gather(
            *(refund_payment(runtime, request) for _ in range(4)), return_exceptions=True
        )
    finally:
        await runtime.close()
    won = [a for a in answers if isinstance(a, RefundOutcome)]
    assert len(won) == 1 and won[0].refund.amount_minor == 2900
    lost = [a for a in answers if isinstance(a, UserInputError)]
    assert len(lost) == 3 and {e.code for e in lost} == {"REFUND_EXCEEDS_PAYMENT"}
    assert len(env.refund_posts()) == 1 and len(env.fake.refunds) == 1
    await env.deliver()
    [listed] = await payments(env, customer)
    assert listed["status"] == "refunded" and listed["amountRefunded"]["amount"] == "29.00"
    assert len(listed["refunds"]) == 1


async def test_a_dashboard_refund_is_recorded_once(env: Env) -> None:
    customer, sub, _ = await paid(env)
    invoice = env.fake.subscriptions[sub["providerSubscriptionId"]]["latest_invoice"]
    deliveries = [env.fake.delivery(e) for e in env.fake.refund(invoice, 500)]
    env.fake.drain()
    await env.deliver(list(reversed(deliveries)) + deliveries)
    [listed] = await payments(env, customer)
    assert listed["status"] == "partially_refunded"
    assert listed["amountRefunded"]["amount"] == "5.00"
    [made] = listed["refunds"]
    assert made["origin"] == "PROVIDER" and made["status"] == "succeeded"
    assert made["providerRefundId"] in env.fake.refunds
    assert len(env.recorder.refunded()) == 1
    # What is left is what Stripe has left: 24.00.
    over = await env.refund(paymentId=listed["id"], amount="24.01")
    assert [e["code"] for e in over["userErrors"]] == ["REFUND_EXCEEDS_PAYMENT"]


async def test_an_outage_leaves_a_failed_refund_and_nothing_held(env: Env) -> None:
    customer, _, payment_id = await paid(env)
    env.fake.fail_next(10, status=503)  # more than the HTTP client's retries
    down = await env.refund(paymentId=payment_id, amount="10.00")
    assert [e["code"] for e in down["userErrors"]] == ["PROVIDER_UNAVAILABLE"]
    assert down["refund"]["status"] == "failed" and down["refund"]["failureReason"]
    assert down["refund"]["payment"]["amountRefunded"]["amount"] == "0.00"
    assert down["refund"]["payment"]["status"] == "succeeded"
    assert env.fake.refunds == {}
    env.fake.clear_faults()
    env.fake.error_next(400, message="Charge is disputed.", type="invalid_request_error", code=None)
    refused = await env.refund(paymentId=payment_id, amount="10.00")
    assert [e["code"] for e in refused["userErrors"]] == ["PROVIDER_ERROR"]
    assert "Charge is disputed." in refused["userErrors"][0]["message"]
    assert refused["refund"]["status"] == "failed"
    # Nothing is held by the failed ones: the whole payment can still be refunded.
    whole = await env.refund(paymentId=payment_id)
    assert whole["userErrors"] == [] and whole["refund"]["amount"]["amount"] == "29.00"
    [listed] = await payments(env, customer)
    assert [r["status"] for r in listed["refunds"]] == ["failed", "failed", "succeeded"]
    assert listed["amountRefunded"]["amount"] == "29.00"
    assert len(env.recorder.refunded()) == 1


async def test_a_refund_stripe_made_although_we_saw_an_outage_counts_once(env: Env) -> None:
    customer, sub, payment_id = await paid(env)
    env.fake.fail_next(10, status=503)
    down = await env.refund(paymentId=payment_id, amount="10.00")
    assert down["refund"]["status"] == "failed"
    env.fake.clear_faults()
    # Stripe did make it (the answer was lost): its deliveries carry our refund id.
    invoice = env.fake.subscriptions[sub["providerSubscriptionId"]]["latest_invoice"]
    env.fake.refund(invoice, 1000, metadata={"billing_gql_refund_id": down["refund"]["id"]})
    await env.deliver()
    [listed] = await payments(env, customer)
    [made] = listed["refunds"]
    assert made["id"] == down["refund"]["id"] and made["status"] == "succeeded"
    assert listed["amountRefunded"]["amount"] == "10.00"
    assert len(env.recorder.refunded()) == 1


async def test_revoke_access_cancels_the_stripe_subscription_now(env: Env) -> None:
    customer, sub, payment_id = await paid(env)
    done = await env.refund(paymentId=payment_id, revokeAccess=True)
    assert done["userErrors"] == [] and done["refund"]["status"] == "succeeded"
    data = await env.gql("query($id: ID!) { subscription(id: $id) { status } }", id=sub["id"])
    assert data["subscription"]["status"] == "CANCELED"
    assert env.fake.subscriptions[sub["providerSubscriptionId"]]["status"] == "canceled"
    seats = await env.gql(
        'query($c: ID) { entitlement(customerId: $c, feature: "seats") { enabled } }', c=customer
    )
    assert seats["entitlement"]["enabled"] is False
