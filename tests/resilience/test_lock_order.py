"""One lock order everywhere (docs/architecture.md, "Lock order"): plan changes, which lock a
push subscription and then its renewal checkout, run against bank-transfer deliveries paying
that renewal, which lock the checkout's subscription before the checkout. Many pairs at once,
over a served app (concurrent requests): no deadlock is detected, nothing fails."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from billing_helpers import (
    CREATE_CHECKOUT,
    advance,
    db_rows,
    make_customer,
    make_usd_plan,
    set_clock,
)
from fakes import FAKE_ENV, FakePlugin, bank_transfer
from served_app import served

from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import ApiClient, TestDatabase

START = datetime(2027, 1, 1, 9, 0, tzinfo=UTC)
PAIRS = 24
ROUNDS = 2

CHANGE_PLAN = """mutation($input: ChangeSubscriptionPlanInput!) {
  changeSubscriptionPlan(input: $input) { effectiveAt userErrors { field message code } } }"""
SUBSCRIPTION = """query($id: ID!) { subscription(id: $id) { id currentPeriodEnd
  renewalCheckout { id bankTransfer { reference } amount { amount } } } }"""
BANK = """query($id: ID!) { checkout(id: $id) { id status bankTransfer { reference }
  subscription { id } } }"""


class Transfers:
    def __init__(self) -> None:
        self.next = 0

    async def pay(self, api: ApiClient, reference: str, amount: int, when: datetime) -> None:
        self.next += 1
        body, headers = bank_transfer(self.next, amount, reference, when.isoformat())
        response = await api.post_webhook("fakebank", body, headers)
        assert response.status_code == 200, response.text


async def _subscribe(api: ApiClient, transfers: Transfers, n: int, when: datetime) -> str:
    customer = await make_customer(api, f"vn{n}")
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
    checkout_id = created["createCheckout"]["checkout"]["id"]
    bank = (await api.admin(BANK, {"id": checkout_id}))["checkout"]
    await transfers.pay(api, bank["bankTransfer"]["reference"], 100000, when)
    paid = (await api.admin(BANK, {"id": checkout_id}))["checkout"]
    assert paid["status"] == "COMPLETED", paid
    return str(paid["subscription"]["id"])


async def test_plan_changes_against_deliveries_never_deadlock(
    app_settings: Settings, clean_database: TestDatabase
) -> None:
    settings = replace(
        app_settings,
        billing=BillingSettings(test_clock=True),
        database=replace(app_settings.database, pool_max_size=10),
        plugins=replace(app_settings.plugins, env=FAKE_ENV),
    )
    await set_clock(clean_database.url, START)
    transfers = Transfers()
    async with served(settings, plugins=[FakePlugin()]) as api:
        vnd = {"prices": [{"currency": "VND", "amount": "100000"}]}
        await make_usd_plan(api, "basic", **vnd)
        await make_usd_plan(api, "plus", prices=[{"currency": "VND", "amount": "250000"}])
        when = START
        for round_ in range(ROUNDS):
            subs = [
                await _subscribe(api, transfers, round_ * PAIRS + i, when) for i in range(PAIRS)
            ]
            first = (await api.admin(SUBSCRIPTION, {"id": subs[0]}))["subscription"]
            period_end = datetime.fromisoformat(first["currentPeriodEnd"])
            when = await advance(api, period_end - timedelta(days=2))
            renewals = [
                (await api.admin(SUBSCRIPTION, {"id": s}))["subscription"]["renewalCheckout"]
                for s in subs
            ]
            assert all(r is not None for r in renewals), renewals

            async def change(sub_id: str) -> Any:
                return await api.gql(
                    CHANGE_PLAN,
                    {"input": {"subscriptionId": sub_id, "planCode": "plus", "proration": "NONE"}},
                    admin=True,
                )

            answers = await asyncio.gather(
                *(change(s) for s in subs),
                *(
                    transfers.pay(api, r["bankTransfer"]["reference"], 100000, when)
                    for r in renewals
                ),
            )
            for answer in answers[:PAIRS]:
                assert answer.status == 200 and not answer.errors, answer.body
                assert answer.data["changeSubscriptionPlan"]["userErrors"] == []
            when = await advance(api, when + timedelta(hours=1))

    failed = await db_rows(
        clean_database.url,
        # Applied at the first attempt: a delivery chosen as a deadlock's victim would fail
        # and be applied again by the retry sweep.
        "SELECT event_id, status, attempts, error FROM webhook_deliveries "
        "WHERE status <> 'applied' OR attempts <> 1",
    )
    assert failed == []
    paid = await db_rows(
        clean_database.url,
        "SELECT count(*) AS n FROM payments WHERE status = 'succeeded'",
    )
    assert paid[0]["n"] == 2 * PAIRS * ROUNDS


async def test_a_delivery_waits_for_the_subscription_before_locking_its_renewal(
    app_settings: Settings, clean_database: TestDatabase
) -> None:
    """Deterministic: while a plan change (here: the test) holds a push subscription's row, a
    delivery paying its renewal waits for that row without holding the renewal checkout — so
    the plan change can go on to expire or release the renewal."""
    settings = replace(
        app_settings,
        billing=BillingSettings(test_clock=True),
        plugins=replace(app_settings.plugins, env=FAKE_ENV),
    )
    await set_clock(clean_database.url, START)
    transfers = Transfers()
    async with served(settings, plugins=[FakePlugin()]) as api:
        await make_usd_plan(api, "basic", prices=[{"currency": "VND", "amount": "100000"}])
        sub_id = await _subscribe(api, transfers, 1, START)
        sub = (await api.admin(SUBSCRIPTION, {"id": sub_id}))["subscription"]
        when = await advance(
            api, datetime.fromisoformat(sub["currentPeriodEnd"]) - timedelta(days=2)
        )
        renewal = (await api.admin(SUBSCRIPTION, {"id": sub_id}))["subscription"]["renewalCheckout"]
        holder = await asyncpg.connect(clean_database.url)
        probe = await asyncpg.connect(clean_database.url)
        try:
            hold = holder.transaction()
            await hold.start()
            await holder.execute("SELECT 1 FROM subscriptions WHERE id = $1 FOR UPDATE", sub_id)
            paying = asyncio.create_task(
                transfers.pay(api, renewal["bankTransfer"]["reference"], 100000, when)
            )
            while not await probe.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ):
                assert not paying.done(), "the delivery did not wait for the subscription"
                await asyncio.sleep(0.02)
            async with probe.transaction():
                # Raises LockNotAvailableError if the waiting delivery held the checkout.
                await probe.execute(
                    "SELECT 1 FROM checkouts WHERE id = $1 FOR UPDATE NOWAIT", renewal["id"]
                )
            await hold.rollback()
            await paying
        finally:
            await holder.close()
            await probe.close()
        done = (await api.admin(BANK, {"id": renewal["id"]}))["checkout"]
        assert done["status"] == "COMPLETED"
