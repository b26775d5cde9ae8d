"""Push renewals run by the test clock with the manual provider: renewals issued at lead time,
paid or left to lapse (PAST_DUE, then EXPIRED after the grace period), checkout expiry,
cancel at period end, trials, and concurrent sweeps that never issue a renewal twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from billing_helpers import (
    DEV,
    START,
    advance,
    make_customer,
    make_usd_plan,
    manual_clock,
    runtime_for,
)
from fakes import FAKE_ENV, FakePlugin, bank_transfer

from billing_gql.applier.engine import apply_billing_events
from billing_gql.errors import ProviderUnavailable, WebhookSignatureError
from billing_gql.money import Money
from billing_gql.plugins.hookspecs import hookimpl
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import (
    BillingEvent,
    CheckoutRequest,
    CheckoutSession,
    EventKind,
    StoredDelivery,
    WebhookEnvelope,
    WebhookRequest,
)
from billing_gql.runtime import Runtime
from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import ApiClient
from billing_gql.testing.database import TestDatabase
from billing_gql.testing.fixtures import MakeApi
from billing_gql.worker.sweeps import run_due_work

CHECKOUT_FIELDS = "id status purpose expiresAt amount { amount currency }"
CREATE_CHECKOUT = """mutation($input: CreateCheckoutInput!) { createCheckout(input: $input) {
  checkout { id status expiresAt } userErrors { field message code } } }"""
COMPLETE = """mutation($id: ID!) { completeManualCheckout(checkoutId: $id) {
  checkout { id status subscription { id } } userErrors { field message code } } }"""
SUBSCRIPTION = """query($id: ID!) { subscription(id: $id) {
  id status currentPeriodStart currentPeriodEnd trialEnd cancelAtPeriodEnd
  plan { code } renewalCheckout { id status expiresAt amount { amount currency } } } }"""
CHECKOUT = """query($id: ID!) { checkout(id: $id) { id status expiresAt } }"""
CANCEL = """mutation($input: CancelSubscriptionInput!) { cancelSubscription(input: $input) {
  subscription { id status cancelAtPeriodEnd } userErrors { field message code } } }"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def subscribe(api: ApiClient, external_id: str, plan_code: str = "pro") -> str:
    """A manual checkout bought and paid now: the new subscription's id."""
    customer = await make_customer(api, external_id)
    created = await api.admin(
        CREATE_CHECKOUT,
        {"input": {"customerId": customer, "planCode": plan_code, "provider": "manual"}},
    )
    checkout_id = created["createCheckout"]["checkout"]["id"]
    done = await api.admin(COMPLETE, {"id": checkout_id})
    subscription_id: str = done["completeManualCheckout"]["checkout"]["subscription"]["id"]
    return subscription_id


async def subscription(api: ApiClient, subscription_id: str) -> dict[str, Any]:
    data = await api.admin(SUBSCRIPTION, {"id": subscription_id})
    found: dict[str, Any] = data["subscription"]
    return found


async def subscription_customer(api: ApiClient, subscription_id: str) -> str:
    data = await api.admin(
        "query($id: ID!) { subscription(id: $id) { customer { id } } }", {"id": subscription_id}
    )
    customer_id: str = data["subscription"]["customer"]["id"]
    return customer_id


async def checkout(api: ApiClient, checkout_id: str) -> dict[str, Any]:
    data = await api.admin(CHECKOUT, {"id": checkout_id})
    found: dict[str, Any] = data["checkout"]
    return found


class Events:
    """An outgoing webhook endpoint for every event: what happened, in order, and when."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return httpx.Response(204)

    def of(self, subscription_id: str, invoices: bool = False) -> list[tuple[str, datetime]]:
        """The events of the subscription: invoice events only (``invoices``), or the others."""
        return [
            (b["type"], at(b["timestamp"]))
            for b in self.bodies
            if b["data"].get("subscription_id") == subscription_id
            and b["type"].startswith("invoice.") == invoices
        ]


async def test_a_month_renewal_paid_then_one_left_to_lapse(make_api: MakeApi) -> None:
    events = Events()
    transports = {"webhook_endpoints": httpx.MockTransport(events.handler)}
    async with make_api(billing=manual_clock(), transports=transports, outbound=DEV) as api:
        await advance(api, START)
        await api.admin(
            """mutation { createWebhookEndpoint(input: {url: "https://app.example/hook",
               events: ["*"]}) { secret } }"""
        )
        await make_usd_plan(api, "pro")
        sub_id = await subscribe(api, "ann")
        sub = await subscription(api, sub_id)
        assert sub["status"] == "ACTIVE"
        period_end = at(sub["currentPeriodEnd"])
        assert period_end == START.replace(month=2)  # monthly, anchored on the 15th 10:00

        # Exactly renewal_lead_days (3) before the period ends, the renewal is issued.
        await advance(api, period_end - timedelta(days=3, seconds=1))
        assert (await subscription(api, sub_id))["renewalCheckout"] is None
        await advance(api, period_end - timedelta(days=3))
        renewal = (await subscription(api, sub_id))["renewalCheckout"]
        assert renewal["status"] == "OPEN"
        assert renewal["amount"] == {"amount": "29.00", "currency": "USD"}
        # It stays payable through the grace period.
        assert at(renewal["expiresAt"]) == period_end + timedelta(days=3)

        # Paid: the period is extended by one month; no PAST_DUE at the old period end.
        paid = await api.admin(COMPLETE, {"id": renewal["id"]})
        assert paid["completeManualCheckout"]["checkout"]["status"] == "COMPLETED"
        await advance(api, period_end + timedelta(hours=1))
        sub = await subscription(api, sub_id)
        assert sub["status"] == "ACTIVE"
        assert at(sub["currentPeriodStart"]) == period_end
        next_end = at(sub["currentPeriodEnd"])
        assert next_end == START.replace(month=3)
        assert sub["renewalCheckout"] is None

        # One advance across the next renewal, the period end and the grace period: each
        # happens at its own moment, in order.
        await advance(api, next_end + timedelta(days=10))
        sub = await subscription(api, sub_id)
        assert sub["status"] == "EXPIRED"
        assert sub["renewalCheckout"] is None
        assert events.of(sub_id)[-4:] == [
            ("checkout.created", next_end - timedelta(days=3)),  # the renewal, unpaid
            ("subscription.past_due", next_end),
            ("checkout.expired", next_end + timedelta(days=3)),
            ("subscription.expired", next_end + timedelta(days=3)),
        ]
        # The unpaid renewal's invoice was issued with it and voided when it expired.
        assert events.of(sub_id, invoices=True)[-3:] == [
            ("invoice.created", next_end - timedelta(days=3)),
            ("invoice.finalized", next_end - timedelta(days=3)),
            ("invoice.voided", next_end + timedelta(days=3)),
        ]
        renewals = await api.admin(
            """query($id: ID!) { subscriptions(customerId: $id) { nodes { id } } }""",
            {"id": (await subscription_customer(api, sub_id))},
        )
        assert [n["id"] for n in renewals["subscriptions"]["nodes"]] == [sub_id]


async def test_checkouts_expire_at_their_time(make_api: MakeApi) -> None:
    async with make_api(billing=manual_clock()) as api:
        await advance(api, START)
        await make_usd_plan(api, "pro")
        customer = await make_customer(api, "bob")
        created = await api.admin(
            CREATE_CHECKOUT,
            {"input": {"customerId": customer, "planCode": "pro", "provider": "manual"}},
        )
        found = created["createCheckout"]["checkout"]
        expires = at(found["expiresAt"])
        assert expires == START + timedelta(minutes=60)
        await advance(api, expires - timedelta(seconds=1))
        assert (await checkout(api, found["id"]))["status"] == "OPEN"
        await advance(api, expires)
        assert (await checkout(api, found["id"]))["status"] == "EXPIRED"


async def test_cancel_at_period_end_is_applied_at_period_end(make_api: MakeApi) -> None:
    async with make_api(billing=manual_clock()) as api:
        await advance(api, START)
        await make_usd_plan(api, "pro")
        sub_id = await subscribe(api, "cat")
        period_end = at((await subscription(api, sub_id))["currentPeriodEnd"])
        canceled = await api.admin(
            CANCEL, {"input": {"subscriptionId": sub_id, "atPeriodEnd": True}}
        )
        assert canceled["cancelSubscription"]["subscription"]["cancelAtPeriodEnd"] is True

        await advance(api, period_end - timedelta(seconds=1))
        sub = await subscription(api, sub_id)
        assert sub["status"] == "ACTIVE"
        assert sub["renewalCheckout"] is None  # no renewal for a subscription that ends
        await advance(api, period_end)
        assert (await subscription(api, sub_id))["status"] == "CANCELED"
        await advance(api, period_end + timedelta(days=40))
        assert (await subscription(api, sub_id))["status"] == "CANCELED"


async def test_a_push_trial_ends_like_a_period(make_api: MakeApi) -> None:
    async with make_api(billing=manual_clock()) as api:
        await advance(api, START)
        await make_usd_plan(api, "trial", trialDays=7)
        paid_id = await subscribe(api, "dan", "trial")
        lapsed_id = await subscribe(api, "eve", "trial")
        sub = await subscription(api, paid_id)
        assert sub["status"] == "TRIALING"
        trial_end = at(sub["trialEnd"])
        assert trial_end == START + timedelta(days=7)

        await advance(api, trial_end - timedelta(days=3))
        renewal = (await subscription(api, paid_id))["renewalCheckout"]
        assert renewal is not None and renewal["amount"]["amount"] == "29.00"
        assert (await subscription(api, lapsed_id))["renewalCheckout"] is not None
        await api.admin(COMPLETE, {"id": renewal["id"]})

        await advance(api, trial_end)
        paid = await subscription(api, paid_id)
        assert paid["status"] == "ACTIVE"
        assert at(paid["currentPeriodStart"]) == trial_end
        assert at(paid["currentPeriodEnd"]) == trial_end.replace(month=trial_end.month + 1)
        assert (await subscription(api, lapsed_id))["status"] == "PAST_DUE"
        await advance(api, trial_end + timedelta(days=3))
        assert (await subscription(api, lapsed_id))["status"] == "EXPIRED"


async def test_concurrent_sweeps_issue_one_renewal_per_period(
    make_api: MakeApi, app_settings: Settings, clean_database: TestDatabase
) -> None:
    async with make_api(billing=manual_clock()) as api:
        await advance(api, START)
        await make_usd_plan(api, "pro")
        ids = [await subscribe(api, f"c{i}") for i in range(8)]
        period_end = at((await subscription(api, ids[0]))["currentPeriodEnd"])

        # Four "workers" (each its own runtime and pool, like separate processes) sweep at the
        # renewal time at once, several times over.
        async with (
            runtime_for(app_settings, manual_clock()) as a,
            runtime_for(app_settings, manual_clock()) as b,
            runtime_for(app_settings, manual_clock()) as c,
            runtime_for(app_settings, manual_clock()) as d,
        ):
            await a.clock.advance(period_end - timedelta(days=3))
            results = await asyncio.gather(*(run_due_work(rt) for rt in (a, b, c, d, a, b, c, d)))
        assert sum(r["issue_renewals"] for r in results) >= len(ids)

        conn = await asyncpg.connect(clean_database.url)
        try:
            rows = await conn.fetch(
                "SELECT subscription_id, count(*) AS n FROM checkouts "
                "WHERE purpose = 'renewal' GROUP BY subscription_id"
            )
            assert sorted(str(r["subscription_id"]) for r in rows) == sorted(ids)
            assert {r["n"] for r in rows} == {1}

            # And the database itself refuses a second live renewal for the same period.
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    "INSERT INTO checkouts (id, customer_id, plan_id, provider, status, purpose, "
                    "currency, quantity, amount_minor, amount_paid_minor, renews_from, "
                    "subscription_id, created_at, updated_at) "
                    "SELECT $1, customer_id, plan_id, provider, 'OPEN', 'renewal', currency, "
                    "quantity, amount_minor, 0, renews_from, subscription_id, "
                    "created_at, updated_at FROM checkouts WHERE purpose = 'renewal' LIMIT 1",
                    uuid.uuid4(),
                )
        finally:
            await conn.close()


async def test_a_cancel_at_period_end_after_paying_ahead_ends_after_the_paid_period(
    make_api: MakeApi,
) -> None:
    async with make_api(billing=manual_clock()) as api:
        await advance(api, START)
        await make_usd_plan(api, "pro")
        sub_id = await subscribe(api, "paid-then-cancel")
        end, next_end = START.replace(month=2), START.replace(month=3)
        await advance(api, end - timedelta(days=3))
        renewal = (await subscription(api, sub_id))["renewalCheckout"]
        await api.admin(COMPLETE, {"id": renewal["id"]})
        canceled = await api.admin(
            CANCEL, {"input": {"subscriptionId": sub_id, "atPeriodEnd": True}}
        )
        assert canceled["cancelSubscription"]["subscription"]["cancelAtPeriodEnd"] is True
        # The next period was bought: it is served, and the subscription ends after it.
        await advance(api, end)
        sub = await subscription(api, sub_id)
        assert (sub["status"], at(sub["currentPeriodStart"])) == ("ACTIVE", end)
        assert sub["cancelAtPeriodEnd"] is True and sub["renewalCheckout"] is None
        await advance(api, next_end)
        assert (await subscription(api, sub_id))["status"] == "CANCELED"


CHANGE_PLAN = """mutation($input: ChangeSubscriptionPlanInput!) {
  changeSubscriptionPlan(input: $input) {
    subscription { plan { code } pendingPlan { code } pendingPlanAt }
    effectiveAt prorationAmount { amount } userErrors { field message code } } }"""
BANK_CHECKOUT = """query($id: ID!) { checkout(id: $id) {
  id status amount { amount currency } bankTransfer { reference amount { amount } } } }"""


async def test_bank_transfer_renewals_with_a_plan_change_at_period_end(make_api: MakeApi) -> None:
    """The SePay-like path: a push provider without plan changes defers a NONE change to the
    period end; the renewal is issued at the new price; unpaid at the period end the plan
    changes and the subscription is PAST_DUE; a transfer during the grace period renews it."""
    async with make_api(
        plugins=[FakePlugin()], env=FAKE_ENV, billing=BillingSettings(test_clock=True)
    ) as api:
        await advance(api, START)
        vnd = {"prices": [{"currency": "VND", "amount": "100000"}]}
        await make_usd_plan(api, "basic", **vnd)
        await make_usd_plan(api, "plus", prices=[{"currency": "VND", "amount": "250000"}])
        customer = await make_customer(api, "vn1")
        created = await api.admin(
            CREATE_CHECKOUT,
            {
                "input": {
                    "customerId": customer,
                    "planCode": "basic",
                    "provider": "fakebank",
                    "currency": "VND",
                }
            },
        )
        first = (
            await api.admin(BANK_CHECKOUT, {"id": created["createCheckout"]["checkout"]["id"]})
        )["checkout"]
        transfer = 0

        async def pay(reference: str, amount: int, when: datetime) -> None:
            nonlocal transfer
            transfer += 1
            body, headers = bank_transfer(transfer, amount, reference, when.isoformat())
            assert (await api.post_webhook("fakebank", body, headers)).status_code == 200

        await pay(first["bankTransfer"]["reference"], 100000, START)
        paid = await checkout(api, first["id"])
        assert paid["status"] == "COMPLETED"
        sub_id = (
            await api.admin(
                "query($id: ID!) { checkout(id: $id) { subscription { id } } }", {"id": first["id"]}
            )
        )["checkout"]["subscription"]["id"]
        period_end = at((await subscription(api, sub_id))["currentPeriodEnd"])

        change = await api.admin(
            CHANGE_PLAN,
            {"input": {"subscriptionId": sub_id, "planCode": "plus", "proration": "NONE"}},
        )
        payload = change["changeSubscriptionPlan"]
        assert at(payload["effectiveAt"]) == period_end
        assert payload["subscription"]["plan"]["code"] == "basic"
        assert payload["subscription"]["pendingPlan"]["code"] == "plus"

        await advance(api, period_end - timedelta(days=3))
        renewal = (await subscription(api, sub_id))["renewalCheckout"]
        assert renewal["amount"] == {"amount": "250000", "currency": "VND"}  # the new plan
        bank = (await api.admin(BANK_CHECKOUT, {"id": renewal["id"]}))["checkout"]

        await advance(api, period_end)
        lapsed = await subscription(api, sub_id)
        assert (lapsed["status"], lapsed["plan"]["code"]) == ("PAST_DUE", "plus")

        await advance(api, period_end + timedelta(days=1))
        await pay(bank["bankTransfer"]["reference"], 250000, period_end + timedelta(days=1))
        renewed = await subscription(api, sub_id)
        assert renewed["status"] == "ACTIVE"
        assert at(renewed["currentPeriodStart"]) == period_end
        assert at(renewed["currentPeriodEnd"]) == START.replace(month=3)
        await advance(api, period_end + timedelta(days=10))
        assert (await subscription(api, sub_id))["status"] == "ACTIVE"


class FlakyBank(Provider):
    """A push provider whose checkout creation fails while ``down`` is set."""

    name = "flakybank"
    display_name = "Flaky Bank"
    needs_provider_ref = False
    charges_renewals = False
    hosted_checkout = False
    down = False

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        if FlakyBank.down:
            raise ProviderUnavailable("the bank is down")
        return CheckoutSession(provider_checkout_id=None, url=None)

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        raise WebhookSignatureError("no webhooks")

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        return []


class FlakyPlugin:
    @hookimpl
    def register_providers(self) -> Sequence[type[Provider]]:
        return [FlakyBank]


async def renewal_statuses(db: TestDatabase) -> list[str]:
    conn = await asyncpg.connect(db.url)
    try:
        rows = await conn.fetch(
            "SELECT status FROM checkouts WHERE purpose = 'renewal' ORDER BY created_at, status"
        )
    finally:
        await conn.close()
    return [r["status"] for r in rows]


async def test_a_renewal_the_provider_failed_is_retried_after_a_pause(
    make_api: MakeApi, app_settings: Settings, clean_database: TestDatabase
) -> None:
    FlakyBank.down = False
    billing = manual_clock()
    async with make_api(plugins=[FlakyPlugin()], billing=billing) as api:
        await advance(api, START)
        await make_usd_plan(api, "pro")
        customer = await make_customer(api, "fl1")
        created = await api.admin(
            CREATE_CHECKOUT,
            {"input": {"customerId": customer, "planCode": "pro", "provider": "flakybank"}},
        )
        checkout_id = created["createCheckout"]["checkout"]["id"]
        # The bank reports the payment (as its webhook would, through the engine's apply).
        settings = replace(app_settings, billing=billing)
        rt = await Runtime.start(settings, extra_plugins=[FlakyPlugin()], apply_migrations=False)
        try:
            await apply_billing_events(
                rt,
                "flakybank",
                [
                    BillingEvent(
                        EventKind.CHECKOUT_COMPLETED,
                        START,
                        checkout_id=checkout_id,
                        amount=Money(3000, "USD"),
                    )
                ],
            )
        finally:
            await rt.close()
        state = await api.admin(
            "query($id: ID!) { checkout(id: $id) { status subscription { id } } }",
            {"id": checkout_id},
        )
        assert state["checkout"]["status"] == "COMPLETED"
        sub_id = state["checkout"]["subscription"]["id"]
        issue_at = at((await subscription(api, sub_id))["currentPeriodEnd"]) - timedelta(days=3)

        FlakyBank.down = True
        await advance(api, issue_at)
        assert await renewal_statuses(clean_database) == ["FAILED"]
        # Not retried on every tick while the provider is down ...
        await advance(api, issue_at + timedelta(minutes=14))
        assert await renewal_statuses(clean_database) == ["FAILED"]
        # ... but once the pause is over.
        await advance(api, issue_at + timedelta(minutes=15, seconds=1))
        assert await renewal_statuses(clean_database) == ["FAILED", "FAILED"]
        FlakyBank.down = False
        await advance(api, issue_at + timedelta(minutes=31))
        assert await renewal_statuses(clean_database) == ["FAILED", "FAILED", "OPEN"]
        renewal = (await subscription(api, sub_id))["renewalCheckout"]
        assert renewal is not None and renewal["status"] == "OPEN"


METERED = """query($id: ID!, $c: ID!) {
  subscription(id: $id) { status currentPeriodStart currentPeriodEnd renewedUntil
    plan { code } renewalCheckout { id } }
  usage(customerId: $c, meter: "api_calls") { value from to }
  invoicePreview(subscriptionId: $id) { periodStart periodEnd
    lines { description quantity amount { amount } } total { amount } }
  entitlement(customerId: $c, feature: "api_calls") { enabled limit used remaining } }"""


def z(moment: datetime) -> str:
    """A UTC time as the API writes it."""
    return moment.isoformat().replace("+00:00", "Z")


RECORD_USAGE = """mutation($input: RecordUsageInput!) { recordUsage(input: $input) {
  accepted userErrors { field message code } } }"""


async def test_a_renewal_paid_early_starts_its_period_at_the_period_end(
    make_api: MakeApi,
) -> None:
    """Paying the renewal two days early buys the next period and changes nothing of the
    current one: usage recorded in its last two days is still billed in it (usage,
    invoicePreview, the metered entitlement); the period rolls over exactly at its end."""
    events = Events()
    transports = {"webhook_endpoints": httpx.MockTransport(events.handler)}
    async with make_api(billing=manual_clock(), transports=transports, outbound=DEV) as api:
        await advance(api, START)
        await api.admin(
            """mutation { createWebhookEndpoint(input: {url: "https://app.example/hook",
               events: ["subscription.*"]}) { secret } }"""
        )
        await api.admin(
            """mutation { createMeter(input: {code: "api_calls", name: "API calls",
               aggregation: COUNT}) { meter { code } } }"""
        )
        await make_usd_plan(
            api,
            "pro",
            features=[{"feature": "api_calls", "limit": "100"}],
            charges=[
                {"meter": "api_calls", "model": "PER_UNIT", "currency": "USD", "unitAmount": "0.1"}
            ],
        )
        sub_id = await subscribe(api, "early")
        customer_id = await subscription_customer(api, sub_id)
        end, next_end = START.replace(month=2), START.replace(month=3)
        calls = 0

        async def call(count: int, when: datetime) -> None:
            nonlocal calls
            batch = [
                {
                    "id": f"call-{calls + i}",
                    "customerId": customer_id,
                    "meter": "api_calls",
                    "timestamp": when.isoformat(),
                }
                for i in range(count)
            ]
            calls += count
            done = await api.admin(RECORD_USAGE, {"input": {"events": batch}})
            assert done["recordUsage"] == {"accepted": count, "userErrors": []}

        async def state() -> dict[str, Any]:
            return await api.admin(METERED, {"id": sub_id, "c": customer_id})

        await advance(api, START + timedelta(days=10))
        await call(3, START + timedelta(days=10))
        await advance(api, end - timedelta(days=3))
        renewal = (await subscription(api, sub_id))["renewalCheckout"]
        await advance(api, end - timedelta(days=2))
        paid = await api.admin(COMPLETE, {"id": renewal["id"]})
        assert paid["completeManualCheckout"]["checkout"]["status"] == "COMPLETED"

        # The last two days of the paid-up period: its usage counts in it.
        await advance(api, end - timedelta(days=1))
        await call(4, end - timedelta(days=1))
        await advance(api, end - timedelta(seconds=1))
        await call(1, end - timedelta(seconds=1))
        before = await state()
        assert before["subscription"] == {
            "status": "ACTIVE",
            "currentPeriodStart": z(START),
            "currentPeriodEnd": z(end),
            "renewedUntil": z(next_end),
            "plan": {"code": "pro"},
            "renewalCheckout": None,
        }
        assert before["usage"] == {"value": "8", "from": z(START), "to": z(end)}
        preview = before["invoicePreview"]
        assert (at(preview["periodStart"]), at(preview["periodEnd"])) == (START, end)
        assert [
            (x["description"], x["quantity"], x["amount"]["amount"]) for x in preview["lines"]
        ] == [
            ("Pro", "1", "29.00"),
            ("API calls", "8", "0.80"),
        ]
        assert before["entitlement"] == {
            "enabled": True,
            "limit": "100",
            "used": "8",
            "remaining": "92",
        }

        # One advance across the period end stops there: the paid period starts on time.
        await advance(api, end + timedelta(hours=6))
        await call(2, end + timedelta(hours=1))
        after = await state()
        assert after["subscription"] == {
            "status": "ACTIVE",
            "currentPeriodStart": z(end),
            "currentPeriodEnd": z(next_end),
            "renewedUntil": None,
            "plan": {"code": "pro"},
            "renewalCheckout": None,
        }
        assert after["usage"] == {"value": "2", "from": z(end), "to": z(next_end)}
        preview = after["invoicePreview"]
        assert (at(preview["periodStart"]), at(preview["periodEnd"])) == (end, next_end)
        assert preview["lines"][1]["quantity"] == "2"
        assert after["entitlement"]["used"] == "2"
        kinds = events.of(sub_id)
        assert ("subscription.updated", end) in kinds
        assert [k for k, _ in kinds if k == "subscription.past_due"] == []
        # The next renewal is issued for the next period, on time.
        await advance(api, next_end - timedelta(days=3))
        assert (await subscription(api, sub_id))["renewalCheckout"]["status"] == "OPEN"


PERIOD_STATE = """query($id: ID!) {
  subscription(id: $id) { status currentPeriodStart currentPeriodEnd renewedUntil
    renewalCheckout { id status expiresAt } }
  invoicePreview(subscriptionId: $id) { lines { description amount { amount } } } }"""


@pytest.mark.parametrize("paid_first", ["reissued", "expired"])
async def test_a_period_renewed_twice_is_bought_once_and_the_second_payment_credited(
    make_api: MakeApi, clean_database: TestDatabase, paid_first: str
) -> None:
    """A renewal checkout expired while its subscription stayed live (the operator raised
    BILLING_GQL_GRACE_DAYS after it was issued), so the sweep issued a second one for the
    same period; the customer pays both. One period is bought; the second payment completes
    its checkout, is recorded, and comes back as a credit for the next renewal."""
    async with make_api(billing=manual_clock(grace_days=1)) as api:
        await advance(api, START)
        await make_usd_plan(api, "pro")
        sub_id = await subscribe(api, "twice")
        end, next_end = START.replace(month=2), START.replace(month=3)
        await advance(api, end - timedelta(days=3))
        first = (await subscription(api, sub_id))["renewalCheckout"]
        assert at(first["expiresAt"]) == end + timedelta(days=1)
    async with make_api(billing=manual_clock(grace_days=3)) as api:
        await advance(api, end + timedelta(days=1))
        assert (await checkout(api, first["id"]))["status"] == "EXPIRED"
        lapsing = await subscription(api, sub_id)
        assert lapsing["status"] == "PAST_DUE"
        second = lapsing["renewalCheckout"]
        assert second["id"] != first["id"] and second["status"] == "OPEN"

        one, other = (second, first) if paid_first == "reissued" else (first, second)
        done = await api.admin(COMPLETE, {"id": one["id"]})
        assert done["completeManualCheckout"]["checkout"]["status"] == "COMPLETED"
        state = (await api.admin(PERIOD_STATE, {"id": sub_id}))["subscription"]
        assert (state["status"], state["currentPeriodStart"], state["currentPeriodEnd"]) == (
            "ACTIVE",
            z(end),
            z(next_end),
        )
        # The period is paid: the other renewal of it is not payable any more.
        assert state["renewalCheckout"] is None
        assert (await checkout(api, other["id"]))["status"] == "EXPIRED"

        # The money for the other one arrives anyway (a late transfer): it is recorded and
        # credited, the period is bought once.
        again = await api.admin(COMPLETE, {"id": other["id"]})
        assert again["completeManualCheckout"]["checkout"]["status"] == "COMPLETED"
        state = await api.admin(PERIOD_STATE, {"id": sub_id})
        assert state["subscription"]["currentPeriodStart"] == z(end)
        assert state["subscription"]["currentPeriodEnd"] == z(next_end)
        assert state["subscription"]["renewedUntil"] is None
        assert [
            (x["description"], x["amount"]["amount"]) for x in state["invoicePreview"]["lines"]
        ] == [("Pro", "29.00"), ("Credit: a renewal of a period paid already", "-29.00")]
        paid = await db_rows(
            clean_database,
            "SELECT status, amount_minor FROM payments WHERE checkout_id = ANY($1::uuid[])",
            [uuid.UUID(first["id"]), uuid.UUID(second["id"])],
        )
        assert paid == [{"status": "succeeded", "amount_minor": 2900}] * 2

        # The credit pays the next renewal: it costs nothing and buys the next period.
        await advance(api, next_end - timedelta(days=3))
        ahead = (await api.admin(PERIOD_STATE, {"id": sub_id}))["subscription"]
        assert ahead["currentPeriodEnd"] == z(next_end)
        assert ahead["renewedUntil"] == z(START.replace(month=4))
        renewals = await db_rows(
            clean_database,
            "SELECT amount_minor, paid_period_start FROM checkouts WHERE purpose = 'renewal' "
            "AND status = 'COMPLETED' ORDER BY paid_period_start NULLS FIRST",
        )
        assert renewals == [
            {"amount_minor": 2900, "paid_period_start": None},
            {"amount_minor": 2900, "paid_period_start": end},
            {"amount_minor": 0, "paid_period_start": next_end},
        ]

        # And the database itself refuses a second paid renewal of a period.
        conn = await asyncpg.connect(clean_database.url)
        try:
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    "UPDATE checkouts SET paid_period_start = $2, paid_period_end = $3 "
                    "WHERE id = $1",
                    uuid.UUID(other["id"]),
                    end,
                    next_end,
                )
        finally:
            await conn.close()


async def db_rows(db: TestDatabase, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(db.url)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()
