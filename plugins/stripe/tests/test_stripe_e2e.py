"""Stripe end to end: GraphQL → the plugin → the fake Stripe → its signed deliveries → state."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

import billing_gql_stripe.plugin
from billing_gql.cli import main
from billing_gql.runtime import Runtime
from billing_gql.settings import Settings
from billing_gql.subscriptions.reconcile import reconcile_provider
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql_stripe.testing import FakeStripe, StripeDelivery

ERRORS = "userErrors { field message code }"
SUB = """id status providerSubscriptionId currentPeriodStart currentPeriodEnd trialEnd
  cancelAtPeriodEnd canceledAt quantity plan { code }"""
CHECKOUT = f"""id status url amount {{ amount currency }} amountPaid {{ amount currency }}
  subscription {{ {SUB} }}"""


@dataclass
class Env:
    api: ApiClient
    fake: FakeStripe
    db_url: str
    settings: Settings

    async def gql(self, query: str, **variables: Any) -> Any:
        return await self.api.admin(query, variables)

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


@pytest.fixture
async def env(make_api, clean_database: TestDatabase, app_settings: Settings) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    fake = FakeStripe()
    async with make_api(
        plugins=[billing_gql_stripe.plugin], env=fake.env(), transports={"stripe": fake.transport()}
    ) as api:
        settings = replace(app_settings, plugins=replace(app_settings.plugins, env=fake.env()))
        yield Env(api, fake, clean_database.url, settings)


async def make_plan(
    env: Env, code: str = "pro", *, amount: int = 2900, interval: str = "MONTH", trial: int = 0
) -> str:
    price = env.fake.create_price(
        unit_amount=amount, interval=None if interval == "ONE_TIME" else interval.lower()
    )
    await env.gql(
        f"mutation($i: CreatePlanInput!) {{ createPlan(input: $i) {{ plan {{ id }} {ERRORS} }} }}",
        i={
            "code": code,
            "name": code,
            "interval": interval,
            "trialDays": trial,
            "prices": [{"currency": "USD", "amount": f"{amount / 100:.2f}"}],
            "features": [{"feature": "seats", "limit": "5"}],
            "providerRefs": [{"provider": "stripe", "ref": price, "currency": "USD"}],
        },
    )
    return price


async def make_customer(env: Env) -> str:
    data = await env.gql(
        f"mutation($i: UpsertCustomerInput!) {{ upsertCustomer(input: $i) {{ customer {{ id }} {ERRORS} }} }}",
        i={"externalId": f"usr_{uuid.uuid4().hex[:6]}", "email": "ann@example.com"},
    )
    return str(data["upsertCustomer"]["customer"]["id"])


async def checkout(env: Env, customer: str, plan: str = "pro", **extra: Any) -> dict[str, Any]:
    data = await env.gql(
        f"mutation($i: CreateCheckoutInput!) {{ createCheckout(input: $i) {{ checkout {{ {CHECKOUT} }} {ERRORS} }} }}",
        i={
            "customerId": customer,
            "planCode": plan,
            "provider": "stripe",
            "successUrl": "https://app.example/ok",
            **extra,
        },
    )
    result: dict[str, Any] = data["createCheckout"]["checkout"]
    return result


async def get_checkout(env: Env, checkout_id: str) -> dict[str, Any]:
    data = await env.gql(
        f"query($id: ID!) {{ checkout(id: $id) {{ {CHECKOUT} }} }}", id=checkout_id
    )
    result: dict[str, Any] = data["checkout"]
    return result


async def subscriptions(env: Env, customer: str) -> list[dict[str, Any]]:
    data = await env.gql(
        f"query($c: ID!) {{ subscriptions(customerId: $c) {{ edges {{ node {{ {SUB} }} }} }} }}",
        c=customer,
    )
    return [e["node"] for e in data["subscriptions"]["edges"]]


async def payments(env: Env, customer: str) -> list[dict[str, Any]]:
    data = await env.gql(
        """query($c: ID!) { payments(customerId: $c) { edges { node {
             providerRef status amount { amount currency } amountRefunded { amount } } } } }""",
        c=customer,
    )
    return [e["node"] for e in data["payments"]["edges"]]


async def seats(env: Env, customer: str) -> dict[str, Any]:
    data = await env.gql(
        'query($c: ID) { entitlement(customerId: $c, feature: "seats") { enabled limit } }',
        c=customer,
    )
    result: dict[str, Any] = data["entitlement"]
    return result


async def subscribed(env: Env) -> tuple[str, dict[str, Any]]:
    await make_plan(env)
    customer = await make_customer(env)
    opened = await checkout(env, customer)
    env.fake.complete_checkout(env.fake.session_for(opened["id"])["id"])
    await env.deliver()
    done = await get_checkout(env, opened["id"])
    assert done["status"] == "COMPLETED"
    return customer, done["subscription"]


async def test_checkout_reaches_stripe_with_the_right_form(env: Env) -> None:
    price = await make_plan(env, trial=7)
    customer = await make_customer(env)
    opened = await checkout(env, customer, quantity=2, cancelUrl="https://app.example/no")
    session = env.fake.session_for(opened["id"])
    assert opened["url"] == session["url"] and opened["status"] == "OPEN"
    sent = env.fake.requests[-1]
    assert sent.headers["idempotency-key"] == f"billing-gql-checkout-{opened['id']}"
    ours = {"billing_gql_checkout_id": opened["id"], "billing_gql_customer_id": customer}
    assert sent.params["line_items"] == [{"price": price, "quantity": "2"}]
    assert sent.params["mode"] == "subscription"
    assert sent.params["metadata"] == ours
    assert sent.params["subscription_data"] == {"metadata": ours, "trial_period_days": "7"}
    assert sent.params["client_reference_id"] == opened["id"]
    assert sent.params["customer_email"] == "ann@example.com"
    assert sent.params["cancel_url"] == "https://app.example/no"
    assert int(sent.params["expires_at"]) > env.fake.now() + 1800


async def test_the_stripe_customer_is_reused_once_known(env: Env) -> None:
    customer, sub = await subscribed(env)
    stripe_customer = env.fake.subscriptions[sub["providerSubscriptionId"]]["customer"]
    await make_plan(env, "team", amount=9900)
    await checkout(env, customer, "team")
    params = env.fake.requests[-1].params
    assert params["customer"] == stripe_customer and "customer_email" not in params


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_any_order_of_the_deliveries_makes_one_active_subscription(
    env: Env, order: tuple[int, ...]
) -> None:
    await make_plan(env)
    customer = await make_customer(env)
    opened = await checkout(env, customer)
    env.fake.complete_checkout(env.fake.session_for(opened["id"])["id"])
    wanted = ("checkout.session.completed", "customer.subscription.created", "invoice.paid")
    relevant = env.fake.drain(wanted)
    shuffled = [relevant[i] for i in order]
    await env.deliver(shuffled + shuffled)  # each one twice
    done = await get_checkout(env, opened["id"])
    assert done["status"] == "COMPLETED" and done["amountPaid"] == done["amount"]
    [sub] = await subscriptions(env, customer)
    stripe_sub = env.fake.subscriptions[sub["providerSubscriptionId"]]
    assert sub["status"] == "ACTIVE" and sub["id"] == done["subscription"]["id"]
    item = stripe_sub["items"]["data"][0]
    period_end = datetime.fromtimestamp(item["current_period_end"], UTC)
    assert datetime.fromisoformat(sub["currentPeriodEnd"].replace("Z", "+00:00")) == period_end
    [payment] = await payments(env, customer)
    invoice_id = env.fake.sessions[env.fake.session_for(opened["id"])["id"]]["invoice"]
    assert payment["providerRef"] == invoice_id and payment["amount"]["amount"] == "29.00"
    assert (await seats(env, customer)) == {"enabled": True, "limit": "5"}


async def test_renewal_failure_and_recovery(env: Env) -> None:
    customer, sub = await subscribed(env)
    stripe_id = sub["providerSubscriptionId"]
    env.fake.fail_payment(stripe_id)
    await env.deliver()
    [past_due] = await subscriptions(env, customer)
    assert past_due["status"] == "PAST_DUE"
    assert (await seats(env, customer))["enabled"] is True  # PAST_DUE still grants
    env.fake.renew(stripe_id)
    await env.deliver()
    [renewed] = await subscriptions(env, customer)
    assert renewed["status"] == "ACTIVE"
    assert renewed["currentPeriodEnd"] > sub["currentPeriodEnd"]
    succeeded = [p for p in await payments(env, customer) if p["status"] != "failed"]
    assert len(succeeded) == 2


async def test_refunds_mark_the_payment(env: Env) -> None:
    customer, sub = await subscribed(env)
    invoice = env.fake.subscriptions[sub["providerSubscriptionId"]]["latest_invoice"]
    env.fake.refund(invoice, 900)
    await env.deliver()
    [payment] = await payments(env, customer)
    assert payment["status"] == "partially_refunded"
    assert payment["amountRefunded"]["amount"] == "9.00"
    env.fake.refund(invoice)
    await env.deliver()
    [payment] = await payments(env, customer)
    assert payment["status"] == "refunded"


async def test_one_time_purchase(env: Env) -> None:
    await make_plan(env, "lifetime", amount=19900, interval="ONE_TIME")
    customer = await make_customer(env)
    opened = await checkout(env, customer, "lifetime")
    assert env.fake.requests[-1].params["mode"] == "payment"
    env.fake.complete_checkout(env.fake.session_for(opened["id"])["id"])
    await env.deliver()
    done = await get_checkout(env, opened["id"])
    assert done["status"] == "COMPLETED"
    assert done["amountPaid"] == {"amount": "199.00", "currency": "USD"}
    assert (await seats(env, customer))["enabled"] is True


async def test_expired_checkout(env: Env) -> None:
    await make_plan(env)
    customer = await make_customer(env)
    opened = await checkout(env, customer)
    env.fake.expire_checkout(env.fake.session_for(opened["id"])["id"])
    await env.deliver()
    assert (await get_checkout(env, opened["id"]))["status"] == "EXPIRED"


OPS = f"""
mutation cancel($id: ID!, $end: Boolean!) {{ cancelSubscription(input: {{subscriptionId: $id, atPeriodEnd: $end}}) {{ subscription {{ {SUB} }} {ERRORS} }} }}
mutation resume($id: ID!) {{ resumeSubscription(subscriptionId: $id) {{ subscription {{ {SUB} }} {ERRORS} }} }}
mutation pause($id: ID!) {{ pauseSubscription(subscriptionId: $id) {{ subscription {{ {SUB} }} {ERRORS} }} }}
mutation change($id: ID!, $plan: String!, $p: ProrationBehavior!) {{
  changeSubscriptionPlan(input: {{subscriptionId: $id, planCode: $plan, proration: $p}}) {{
    subscription {{ {SUB} }} prorationAmount {{ amount currency }} effectiveAt {ERRORS} }} }}
mutation portal($c: ID!) {{ createPortalSession(customerId: $c, returnUrl: "https://app.example/account") {{ url {ERRORS} }} }}
"""


def operation(name: str) -> str:
    """The one mutation called ``name`` from :data:`OPS`."""
    [document] = [part for part in OPS.split("\nmutation ") if part.startswith(name)]
    return "mutation " + document


async def run(env: Env, name: str, **variables: Any) -> dict[str, Any]:
    result = await env.api.gql(operation(name), variables, admin=True)
    payload: dict[str, Any] = next(iter(result.ok().values()))
    return payload


async def test_operations_reach_stripe(env: Env) -> None:
    customer, sub = await subscribed(env)
    stripe_id = sub["providerSubscriptionId"]
    path = f"/v1/subscriptions/{stripe_id}"

    canceled = await run(env, "cancel", id=sub["id"], end=True)
    assert canceled["subscription"]["cancelAtPeriodEnd"] is True
    assert (env.fake.requests[-1].path, env.fake.requests[-1].params) == (
        path,
        {"cancel_at_period_end": "true"},
    )
    await env.deliver()
    resumed = await run(env, "resume", id=sub["id"])
    assert resumed["subscription"]["cancelAtPeriodEnd"] is False
    assert env.fake.requests[-1].params == {"cancel_at_period_end": "false"}
    await env.deliver()

    paused = await run(env, "pause", id=sub["id"])
    assert paused["subscription"]["status"] == "PAUSED"
    assert env.fake.requests[-1].params == {"pause_collection": {"behavior": "void"}}
    await env.deliver()
    assert (await seats(env, customer))["enabled"] is False
    resumed = await run(env, "resume", id=sub["id"])
    assert resumed["subscription"]["status"] == "ACTIVE"
    assert env.fake.requests[-1].params == {"pause_collection": ""}
    await env.deliver()

    team_price = await make_plan(env, "team", amount=9900)
    changed = await run(env, "change", id=sub["id"], plan="team", p="ALWAYS_INVOICE")
    assert changed["subscription"]["plan"]["code"] == "team"
    item = env.fake.subscriptions[stripe_id]["items"]["data"][0]
    assert env.fake.requests[-1].params == {
        "items": [{"id": item["id"], "price": team_price, "quantity": "1"}],
        "proration_behavior": "always_invoice",
    }
    await env.deliver()

    portal = await run(env, "portal", c=customer)
    session = next(iter(env.fake.portal_sessions.values()))
    assert portal["url"] == session["url"]
    assert session["customer"] == env.fake.subscriptions[stripe_id]["customer"]
    assert session["return_url"] == "https://app.example/account"

    ended = await run(env, "cancel", id=sub["id"], end=False)
    assert ended["subscription"]["status"] == "CANCELED"
    assert env.fake.requests[-1].method == "DELETE"
    await env.deliver()
    [final] = await subscriptions(env, customer)
    assert final["status"] == "CANCELED" and final["plan"]["code"] == "team"


async def test_a_stripe_refusal_is_a_user_error_and_changes_nothing(env: Env) -> None:
    customer, sub = await subscribed(env)
    env.fake.error_next(
        400, message="This subscription cannot be updated.", type="invalid_request_error", code=None
    )
    result = await env.api.gql(operation("cancel"), {"id": sub["id"], "end": True}, admin=True)
    [error] = result.data["cancelSubscription"]["userErrors"]
    assert error["code"] == "PROVIDER_ERROR"
    assert error["message"] == "Stripe: This subscription cannot be updated."
    [same] = await subscriptions(env, customer)
    assert same["cancelAtPeriodEnd"] is False


async def test_tampered_and_stale_deliveries_are_401_and_store_nothing(env: Env) -> None:
    await make_plan(env)
    customer = await make_customer(env)
    opened = await checkout(env, customer)
    env.fake.complete_checkout(env.fake.session_for(opened["id"])["id"])
    deliveries = env.fake.drain()
    for d in deliveries:
        tampered = d.body.replace(b'"livemode": false', b'"livemode": true')
        assert tampered != d.body
        assert (await env.api.post_webhook("stripe", tampered, d.headers)).status_code == 401
        stale = env.fake.delivery(d.event, timestamp=int(time.time()) - 301)
        assert (await env.api.post_webhook("stripe", stale.body, stale.headers)).status_code == 401
    assert await env.rows("SELECT id FROM webhook_deliveries") == []
    assert (await get_checkout(env, opened["id"]))["status"] == "OPEN"
    assert await subscriptions(env, customer) == []


async def test_reconcile_repairs_missed_webhooks(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    customer, sub = await subscribed(env)
    stripe_id = sub["providerSubscriptionId"]
    env.fake.cancel(stripe_id, at_period_end=True)
    env.fake.drain()  # the webhook never arrives
    runtime = await Runtime.start(
        env.settings,
        extra_plugins=[billing_gql_stripe.plugin],
        transports={"stripe": env.fake.transport()},
        apply_migrations=False,
    )
    try:
        report = await reconcile_provider(runtime, "stripe")
        again = await reconcile_provider(runtime, "stripe")
    finally:
        await runtime.close()
    assert report.checked == 1 and report.events == 1
    [change] = report.changes
    assert change.fields["cancelAtPeriodEnd"] == (False, True)
    assert str(sub["id"]) in change.describe() and stripe_id in change.describe()
    assert "cancelAtPeriodEnd false → true" in change.describe()
    assert again.changes == []
    [repaired] = await subscriptions(env, customer)
    assert repaired["cancelAtPeriodEnd"] is True
    get = [
        r
        for r in env.fake.requests
        if r.method == "GET" and r.path == f"/v1/subscriptions/{stripe_id}"
    ]
    assert len(get) >= 2


def test_reconcile_cli_finds_the_plugin_through_its_entry_point(
    monkeypatch: pytest.MonkeyPatch,
    clean_database: TestDatabase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", clean_database.url)
    for key, value in FakeStripe().env("http://127.0.0.1:9").items():
        monkeypatch.setenv(key, value)  # unreachable: with nothing to check, nothing is called
    assert main(["reconcile", "stripe"]) == 0
    assert capsys.readouterr().out == "reconciled stripe: 0 subscriptions checked, 0 changed\n"


def test_reconcile_cli_refuses_an_unknown_provider(
    monkeypatch: pytest.MonkeyPatch,
    clean_database: TestDatabase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", clean_database.url)
    monkeypatch.setenv("BILLING_GQL_PLUGINS", "nothing")
    assert main(["reconcile", "stripe"]) == 2
    assert 'provider "stripe" is not configured' in capsys.readouterr().err


# -- ordering: Stripe's clock, not ours; ties settled by re-fetching ----------------------------


@pytest.fixture
async def frozen_env(
    make_api: Any, clean_database: TestDatabase, app_settings: Settings
) -> AsyncIterator[Env]:
    """Stripe with its clock stopped: every change lands in one second, as a burst of changes
    does at Stripe (``created`` has whole seconds)."""
    now = float(int(time.time()))
    fake = FakeStripe(clock=lambda: now, distinct_times=False)
    async with make_api(
        plugins=[billing_gql_stripe.plugin], env=fake.env(), transports={"stripe": fake.transport()}
    ) as api:
        settings = replace(app_settings, plugins=replace(app_settings.plugins, env=fake.env()))
        yield Env(api, fake, clean_database.url, settings)


async def test_same_second_changes_delivered_in_reverse_end_in_stripes_state(
    frozen_env: Env,
) -> None:
    env = frozen_env
    customer, sub = await subscribed(env)
    stripe_id = sub["providerSubscriptionId"]
    # Two dashboard changes within one second: cancel at period end, then pause.
    env.fake.cancel(stripe_id, at_period_end=True)
    env.fake.pause(stripe_id)
    first, second = env.fake.drain()
    assert first.event["created"] == second.event["created"]
    before = len(env.fake.requests)
    await env.deliver([second, first])  # the older one last
    [state] = await subscriptions(env, customer)
    assert state["status"] == "PAUSED" and state["cancelAtPeriodEnd"] is True
    # Each tie was settled by reading the subscription from Stripe.
    reads = [r for r in env.fake.requests[before:] if r.method == "GET"]
    assert [r.path for r in reads] == [f"/v1/subscriptions/{stripe_id}"] * 2


@pytest.mark.parametrize("skew", [-600, 600])
async def test_our_cancel_then_stripes_deliveries_stay_consistent(env: Env, skew: int) -> None:
    """Stripe's clock ``skew`` seconds off ours: operations are ordered on Stripe's."""
    env.fake.offset = skew
    customer, sub = await subscribed(env)
    stripe_id = sub["providerSubscriptionId"]
    canceled = await run(env, "cancel", id=sub["id"], end=True)
    assert canceled["subscription"]["cancelAtPeriodEnd"] is True
    await env.deliver()  # Stripe's own delivery about that cancel
    [state] = await subscriptions(env, customer)
    assert state["cancelAtPeriodEnd"] is True and state["status"] == "ACTIVE"
    # A later change at Stripe applies, whatever our clock says.
    env.fake.pause(stripe_id)
    await env.deliver()
    [state] = await subscriptions(env, customer)
    assert state["status"] == "PAUSED" and state["cancelAtPeriodEnd"] is True


@pytest.mark.parametrize("skew", [-600, 600])
async def test_an_old_delivery_in_flight_after_our_operation_does_not_regress(
    env: Env, skew: int
) -> None:
    env.fake.offset = skew
    customer, sub = await subscribed(env)
    stripe_id = sub["providerSubscriptionId"]
    env.fake.cancel(stripe_id, at_period_end=True)  # in the dashboard
    in_flight = env.fake.drain()  # not delivered yet
    # The customer cancels here too and changes their mind: resumed through us.
    await run(env, "cancel", id=sub["id"], end=True)
    resumed = await run(env, "resume", id=sub["id"])
    assert resumed["subscription"]["cancelAtPeriodEnd"] is False
    await env.deliver(in_flight)  # the dashboard's cancel arrives late, before the rest
    [state] = await subscriptions(env, customer)
    assert state["cancelAtPeriodEnd"] is False and state["status"] == "ACTIVE"
    await env.deliver()  # Stripe's deliveries about our cancel and resume
    [state] = await subscriptions(env, customer)
    assert state["cancelAtPeriodEnd"] is False and state["status"] == "ACTIVE"
    assert env.fake.subscriptions[stripe_id]["cancel_at_period_end"] is False


async def test_a_refusal_naming_a_field_points_at_it_under_input(env: Env) -> None:
    await make_plan(env)
    customer = await make_customer(env)
    result = await env.api.gql(
        f"mutation($i: CreateCheckoutInput!) {{ createCheckout(input: $i) {{ "
        f"checkout {{ status }} {ERRORS} }} }}",
        {"i": {"customerId": customer, "planCode": "pro", "provider": "stripe"}},  # no successUrl
        admin=True,
    )
    payload = result.data["createCheckout"]
    assert payload["checkout"]["status"] == "FAILED"
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        (["input", "successUrl"], "INVALID_INPUT")
    ]


UNMATCHED = """query { unmatchedPayments(provider: "stripe") { nodes {
  providerRef status unmatchedReason amount { amount currency } claimedCheckout { id } } } }"""


@pytest.mark.parametrize("interval", ["MONTH", "ONE_TIME"])
async def test_a_cheap_payment_link_carrying_our_checkout_id_completes_nothing(
    env: Env, interval: str
) -> None:
    """Issue #11: a correctly signed ``checkout.session.completed`` of a session the buyer
    opened from a cheap Payment Link with ``?client_reference_id=<our checkout id>`` (a
    different session id, ``amount_total: 1`` USD, or 50 JPY) left a 500.00 USD checkout
    COMPLETED with its entitlements granted."""
    await make_plan(env, amount=50000, interval=interval)
    customer = await make_customer(env)
    ours = await checkout(env, customer)
    assert ours["amount"] == {"amount": "500.00", "currency": "USD"}
    env.fake.drain()
    for amount, currency in ((1, "usd"), (50, "jpy")):
        cheap = env.fake.create_price(
            unit_amount=amount,
            currency=currency,
            interval=None if interval == "ONE_TIME" else "month",
        )
        link = env.fake.payment_link_session(cheap, client_reference_id=ours["id"])
        env.fake.complete_checkout(link)
        [completed] = env.fake.drain(["checkout.session.completed"])
        session = completed.event["data"]["object"]
        assert session["client_reference_id"] == ours["id"] and session["metadata"] == {}
        assert (session["amount_total"], session["currency"]) == (amount, currency)
        await env.deliver([completed])
    after = await get_checkout(env, ours["id"])
    assert after["status"] == "OPEN" and after["subscription"] is None
    assert after["amountPaid"] == {"amount": "0.00", "currency": "USD"}
    assert await subscriptions(env, customer) == []
    assert (await seats(env, customer))["enabled"] is False
    # Operators see both payments, unmatched, naming the checkout they claimed.
    kept = (await env.gql(UNMATCHED))["unmatchedPayments"]["nodes"]
    assert sorted((k["amount"]["amount"], k["amount"]["currency"]) for k in kept) == [
        ("0.01", "USD"),
        ("50", "JPY"),
    ]
    assert {k["unmatchedReason"] for k in kept} == {"PROVIDER_CHECKOUT_MISMATCH"}
    assert all(k["claimedCheckout"] == {"id": ours["id"]} for k in kept)
    # Our own session, paid, still completes it.
    env.fake.complete_checkout(_our_session(env, ours))
    await env.deliver()
    after = await get_checkout(env, ours["id"])
    assert after["status"] == "COMPLETED"
    assert (await seats(env, customer))["enabled"] is True


def _our_session(env: Env, checkout: dict[str, Any]) -> str:
    """The session billing-gql created for ``checkout`` (its url ends with the session id)."""
    return str(checkout["url"]).rsplit("/", 1)[-1]


INVOICES = """query($c: ID!) { invoices(customerId: $c) { nodes {
  id number status isCreditNote provider providerInvoiceId hostedUrl pdfUrl currency
  total { amount currency } subtotal { amount } amountPaid { amount } amountDue { amount }
  subscription { id } creditOf { id number }
  lines { kind description quantity amount { amount currency } unitAmount { amount } } } } }"""


async def invoices_of(env: Env, customer: str) -> list[dict[str, Any]]:
    data = await env.gql(INVOICES, c=customer)
    found: list[dict[str, Any]] = data["invoices"]["nodes"]
    return found


async def test_stripe_invoices_are_mirrored_never_regressed(env: Env) -> None:
    customer, sub = await subscribed(env)
    [first] = await invoices_of(env, customer)
    stripe_invoice = env.fake.invoices[first["providerInvoiceId"]]
    assert first["number"] == stripe_invoice["number"] and first["status"] == "PAID"
    assert first["provider"] == "stripe" and not first["isCreditNote"]
    assert first["hostedUrl"] == stripe_invoice["hosted_invoice_url"]
    assert first["pdfUrl"] == stripe_invoice["invoice_pdf"]
    assert first["total"] == {"amount": "29.00", "currency": "USD"}
    assert first["amountPaid"]["amount"] == "29.00" and first["amountDue"]["amount"] == "0.00"
    assert first["subscription"] == {"id": sub["id"]}
    assert [(li["kind"], li["amount"]["amount"]) for li in first["lines"]] == [("PLAN", "29.00")]

    # A failed renewal: its invoice stays open; then an operator voids it. The void arrives
    # first and the older "open" state after it: the mirror never goes back.
    env.fake.fail_payment(sub["providerSubscriptionId"])
    failed = env.fake.drain()
    open_id = env.fake.subscriptions[sub["providerSubscriptionId"]]["latest_invoice"]
    env.fake.void_invoice(open_id)
    voided = env.fake.drain()
    await env.deliver(voided)
    await env.deliver(failed)
    await env.deliver(voided)  # a repeat changes nothing
    mirrored = {i["providerInvoiceId"]: i for i in await invoices_of(env, customer)}
    assert len(mirrored) == 2
    assert mirrored[open_id]["status"] == "VOID"
    assert mirrored[open_id]["amountDue"]["amount"] == "0.00"
    assert mirrored[open_id]["number"] == env.fake.invoices[open_id]["number"]

    # Refunds through Stripe's dashboard: a credit note of ours for each refund. Two refunds
    # whose deliveries arrive out of order (the newer, 5.00, first), then a repeat: one note
    # each, none more.
    env.fake.refund(first["providerInvoiceId"], 900)
    older = env.fake.drain()
    env.fake.refund(first["providerInvoiceId"], 500)
    newer = env.fake.drain()
    await env.deliver(newer)
    await env.deliver(older)
    await env.deliver(newer + older)
    notes = [i for i in await invoices_of(env, customer) if i["isCreditNote"]]
    assert sorted(n["total"]["amount"] for n in notes) == ["-5.00", "-9.00"]
    assert len({n["number"] for n in notes}) == 2
    for note in notes:
        assert note["total"]["currency"] == "USD"
        assert note["creditOf"] == {"id": first["id"], "number": first["number"]}
        assert note["number"].startswith("INV-") and note["status"] == "PAID"
        assert [li["kind"] for li in note["lines"]] == ["CREDIT"]
