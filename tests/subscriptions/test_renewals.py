"""Push renewals (the engine issues a renewal checkout each period) and period arithmetic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import UUID

import pytest
from billing_helpers import (
    SUBSCRIPTION,
    advance,
    complete,
    db_rows,
    iso,
    make_customer,
    make_plan,
    runtime_for,
    set_clock,
    subscribe,
)
from fakes import FAKE_ENV, FakePlugin

from billing_gql.checkout.push_renewals import create_invoice_checkout, create_renewal_checkout
from billing_gql.core.periods import next_period_end
from billing_gql.errors import UserInputError
from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import ApiClient

T0 = datetime(2027, 1, 31, 12, 0, 0, tzinfo=UTC)
BILLING = BillingSettings(manual_provider=True, test_clock=True)


@pytest.fixture
async def clock_api(make_api, clean_database) -> AsyncIterator[ApiClient]:  # type: ignore[no-untyped-def]
    await set_clock(clean_database.url, T0)
    async with make_api(billing=BILLING) as api:
        yield api


def test_month_periods_keep_the_anchor_day() -> None:
    ends = []
    end = T0
    for _ in range(4):
        end = next_period_end(T0, "MONTH", 1, end)
        ends.append(end.date().isoformat())
    assert ends == ["2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31"]
    leap = datetime(2028, 2, 29, tzinfo=UTC)
    assert next_period_end(leap, "YEAR", 1, leap).date().isoformat() == "2029-02-28"
    assert (
        next_period_end(leap, "YEAR", 1, datetime(2029, 2, 28, tzinfo=UTC)).date().isoformat()
        == "2030-02-28"
    )
    assert next_period_end(leap, "YEAR", 4, leap).date().isoformat() == "2032-02-29"
    assert next_period_end(T0, "WEEK", 2, T0) == datetime(2027, 2, 14, 12, tzinfo=UTC)
    assert next_period_end(T0, "DAY", 3, T0) == datetime(2027, 2, 3, 12, tzinfo=UTC)
    assert next_period_end(T0, "MONTH", 3, T0).date().isoformat() == "2027-04-30"


async def test_renewal_checkout_extends_from_the_period_end(
    clock_api: ApiClient, app_settings: Settings, clean_database
) -> None:  # type: ignore[no-untyped-def]
    api = clock_api
    await make_plan(api)
    cid = await make_customer(api)
    sub = await subscribe(api, cid, quantity=2)
    assert iso(sub["currentPeriodEnd"]) == datetime(2027, 2, 28, 12, tzinfo=UTC)
    assert sub["renewalCheckout"] is None
    await db_rows(
        clean_database.url,
        "INSERT INTO invoice_items (subscription_id, kind, description, currency, "
        "amount_minor, quantity, created_at) VALUES ($1::uuid, 'proration', 'x', "
        "'USD', -500, 1, $2)",
        sub["id"],
        T0,
    )
    await set_clock(clean_database.url, datetime(2027, 2, 25, 12, tzinfo=UTC))
    async with runtime_for(app_settings, BILLING) as rt:
        first = await create_renewal_checkout(rt, UUID(sub["id"]))
        again = await create_renewal_checkout(rt, UUID(sub["id"]))
    assert again.checkout.id == first.checkout.id
    renewal = first.checkout
    assert renewal.purpose == "renewal" and renewal.status == "OPEN"
    assert renewal.amount_minor == 2 * 3000 - 500
    # Open until the grace period after the period end is over (default 3 days).
    assert renewal.expires_at == datetime(2027, 3, 3, 12, tzinfo=UTC)
    shown = (await api.gql(SUBSCRIPTION, {"id": sub["id"]}, admin=True)).ok()["subscription"]
    assert shown["renewalCheckout"]["id"] == str(renewal.id)
    assert shown["renewalCheckout"]["amount"] == {"amount": "55.00", "currency": "USD"}

    paid = await complete(api, str(renewal.id))
    assert paid["status"] == "COMPLETED"
    # Paid three days ahead: the current period runs to its end, the paid one follows it.
    paid_ahead = paid["subscription"]
    assert paid_ahead["status"] == "ACTIVE" and paid_ahead["renewalCheckout"] is None
    assert iso(paid_ahead["currentPeriodStart"]) == T0
    assert iso(paid_ahead["currentPeriodEnd"]) == datetime(2027, 2, 28, 12, tzinfo=UTC)
    assert iso(paid_ahead["renewedUntil"]) == datetime(2027, 3, 31, 12, tzinfo=UTC)
    items = await db_rows(clean_database.url, "SELECT invoiced_at FROM invoice_items")
    assert items[0]["invoiced_at"] is not None
    await advance(api, datetime(2027, 2, 28, 12, tzinfo=UTC))
    renewed = (await api.admin(SUBSCRIPTION, {"id": sub["id"]}))["subscription"]
    assert renewed["status"] == "ACTIVE" and renewed["renewedUntil"] is None
    assert iso(renewed["currentPeriodStart"]) == datetime(2027, 2, 28, 12, tzinfo=UTC)
    assert iso(renewed["currentPeriodEnd"]) == datetime(2027, 3, 31, 12, tzinfo=UTC)

    # The next period: Mar 31 -> Apr 30.
    await set_clock(clean_database.url, datetime(2027, 3, 29, tzinfo=UTC))
    async with runtime_for(app_settings, BILLING) as rt:
        nxt = await create_renewal_checkout(rt, UUID(sub["id"]))
        assert nxt.checkout.amount_minor == 6000
        assert await create_invoice_checkout(rt, UUID(sub["id"])) is None
    again_paid = (await complete(api, str(nxt.checkout.id)))["subscription"]
    assert iso(again_paid["currentPeriodEnd"]) == datetime(2027, 3, 31, 12, tzinfo=UTC)
    assert iso(again_paid["renewedUntil"]) == datetime(2027, 4, 30, 12, tzinfo=UTC)


async def test_renewal_refused_for_provider_managed_or_canceling(
    clock_api: ApiClient, app_settings: Settings, clean_database
) -> None:  # type: ignore[no-untyped-def]
    api = clock_api
    await make_plan(api)
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    # The same subscription, but run by a card provider that charges its renewals itself
    # (a second live one of the plan: kept only as a duplicate from before that rule).
    [managed] = await db_rows(
        clean_database.url,
        "INSERT INTO subscriptions (customer_id, plan_id, provider, provider_subscription_id, "
        "status, currency, quantity, current_period_start, current_period_end, created_at, "
        "updated_at, legacy_duplicate) SELECT customer_id, plan_id, 'fakepay', 'fsub_1', "
        "status, currency, quantity, current_period_start, current_period_end, created_at, "
        "updated_at, true FROM subscriptions RETURNING id",
    )
    await db_rows(
        clean_database.url,
        "UPDATE subscriptions SET cancel_at_period_end = true WHERE id = $1::uuid",
        sub["id"],
    )
    async with runtime_for(app_settings, BILLING, FAKE_ENV, extra_plugins=[FakePlugin()]) as rt:
        for subscription_id in (managed["id"], UUID(sub["id"])):
            with pytest.raises(UserInputError) as caught:
                await create_renewal_checkout(rt, subscription_id)
            assert caught.value.code == "INVALID_STATE"
        with pytest.raises(UserInputError) as missing:
            await create_renewal_checkout(rt, UUID(int=0))
        assert missing.value.code == "NOT_FOUND"
    assert (
        await db_rows(clean_database.url, "SELECT id FROM checkouts WHERE purpose <> 'new'") == []
    )


async def test_trial_renews_into_the_first_paid_period(
    clock_api: ApiClient, app_settings: Settings, clean_database
) -> None:  # type: ignore[no-untyped-def]
    api = clock_api
    await make_plan(api, trialDays=7)
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    assert sub["status"] == "TRIALING"
    async with runtime_for(app_settings, BILLING) as rt:
        renewal = (await create_renewal_checkout(rt, UUID(sub["id"]))).checkout
    paid = (await complete(api, str(renewal.id)))["subscription"]
    # Paid during the trial: the trial runs to its end, then the first paid period starts.
    trial_end = datetime(2027, 2, 7, 12, tzinfo=UTC)
    assert paid["status"] == "TRIALING" and iso(paid["currentPeriodEnd"]) == trial_end
    assert iso(paid["renewedUntil"]) == datetime(2027, 3, 7, 12, tzinfo=UTC)
    await advance(api, trial_end)
    active = (await api.admin(SUBSCRIPTION, {"id": sub["id"]}))["subscription"]
    assert active["status"] == "ACTIVE" and active["renewedUntil"] is None
    assert iso(active["currentPeriodStart"]) == trial_end
    assert iso(active["currentPeriodEnd"]) == datetime(2027, 3, 7, 12, tzinfo=UTC)
