"""cancelSubscription, resumeSubscription, pauseSubscription, changeSubscriptionPlan (with the
exact proration of docs/api.md#proration in USD, VND and JPY), createPortalSession."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any
from uuid import UUID

import pytest
from billing_helpers import (
    CANCEL,
    CHANGE,
    CHECKOUT,
    PAUSE,
    PORTAL,
    RESUME,
    SUBSCRIPTION,
    checkout_ok,
    complete,
    db_rows,
    entitlement,
    iso,
    make_customer,
    make_plan,
    runtime_for,
    set_clock,
    subscribe,
)
from fakes import FAKE_ENV, FakePayApi, FakePlugin, bank_transfer, pay_event

from billing_gql.checkout.push_renewals import create_renewal_checkout
from billing_gql.money import parse_major
from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import ApiClient

T0 = datetime(2027, 1, 31, 12, 0, 0, tzinfo=UTC)
END = datetime(2027, 2, 28, 12, 0, 0, tzinfo=UTC)  # 28 days: 2,419,200 s
BILLING = BillingSettings(manual_provider=True, test_clock=True)


@pytest.fixture
async def clock_api(make_api, clean_database) -> AsyncIterator[ApiClient]:  # type: ignore[no-untyped-def]
    await set_clock(clean_database.url, T0)
    async with make_api(plugins=[FakePlugin()], env=FAKE_ENV, billing=BILLING) as api:
        yield api


def prices(usd: str, vnd: str, jpy: str) -> list[dict[str, str]]:
    return [
        {"currency": "USD", "amount": usd},
        {"currency": "VND", "amount": vnd},
        {"currency": "JPY", "amount": jpy},
    ]


async def advance(api: ApiClient, to: datetime) -> None:
    data = await api.admin(
        "mutation($to: DateTime!) { advanceClock(to: $to) { now userErrors { code } } }",
        {"to": to.isoformat()},
    )
    assert data["advanceClock"]["userErrors"] == []


async def change(api: ApiClient, sub_id: str, plan: str, **extra: Any) -> dict[str, Any]:
    result = await api.gql(
        CHANGE, {"input": {"subscriptionId": sub_id, "planCode": plan, **extra}}, admin=True
    )
    payload: dict[str, Any] = result.ok()["changeSubscriptionPlan"]
    return payload


async def test_cancel_at_period_end_resume_and_cancel_now(
    clock_api: ApiClient, app_settings: Settings, clean_database
) -> None:  # type: ignore[no-untyped-def]
    api = clock_api
    await make_plan(api)
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    pending = await api.admin(CANCEL, {"input": {"subscriptionId": sub["id"]}})
    shown = pending["cancelSubscription"]["subscription"]
    assert shown["status"] == "ACTIVE" and shown["cancelAtPeriodEnd"] is True
    assert (await entitlement(api, cid, "sso"))["enabled"] is True  # until the period end
    resumed = (await api.admin(RESUME, {"id": sub["id"]}))["resumeSubscription"]["subscription"]
    assert resumed["cancelAtPeriodEnd"] is False and resumed["status"] == "ACTIVE"
    again = await api.gql(RESUME, {"id": sub["id"]}, admin=True)
    assert [e["code"] for e in again.data["resumeSubscription"]["userErrors"]] == ["INVALID_STATE"]

    await set_clock(clean_database.url, T0 + timedelta(days=3))
    now = await api.admin(CANCEL, {"input": {"subscriptionId": sub["id"], "atPeriodEnd": False}})
    ended = now["cancelSubscription"]["subscription"]
    assert ended["status"] == "CANCELED"
    assert iso(ended["canceledAt"]) == T0 + timedelta(days=3)
    assert (await entitlement(api, cid, "sso"))["enabled"] is False
    twice = await api.gql(CANCEL, {"input": {"subscriptionId": sub["id"]}}, admin=True)
    assert [(e["field"], e["code"]) for e in twice.data["cancelSubscription"]["userErrors"]] == [
        (["input"], "INVALID_STATE")
    ]
    missing = await api.gql(CANCEL, {"input": {"subscriptionId": str(UUID(int=1))}}, admin=True)
    assert [(e["field"], e["code"]) for e in missing.data["cancelSubscription"]["userErrors"]] == [
        (["input", "subscriptionId"], "NOT_FOUND")
    ]


async def test_pause_and_resume(clock_api: ApiClient) -> None:
    api = clock_api
    await make_plan(api)
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    paused = (await api.admin(PAUSE, {"id": sub["id"]}))["pauseSubscription"]["subscription"]
    assert paused["status"] == "PAUSED"
    assert (await entitlement(api, cid, "sso"))["enabled"] is False
    resumed = (await api.admin(RESUME, {"id": sub["id"]}))["resumeSubscription"]["subscription"]
    assert resumed["status"] == "ACTIVE"
    # A bank-transfer provider that cannot pause.
    vn = await make_customer(api, "vn", currency="VND")
    checkout = await checkout_ok(api, customerId=vn, planCode="pro", provider="fakebank")
    await db_rows_update_complete(api, checkout)
    bank_sub = (await api.admin(CHECKOUT, {"id": checkout["id"]}))["checkout"]["subscription"]
    refused = await api.gql(PAUSE, {"id": bank_sub["id"]}, admin=True)
    assert [e["code"] for e in refused.data["pauseSubscription"]["userErrors"]] == ["NOT_SUPPORTED"]


async def db_rows_update_complete(api: ApiClient, checkout: dict[str, Any]) -> None:
    """Pay a fakebank checkout by a matching transfer."""
    body, headers = bank_transfer(
        99,
        int(checkout["amount"]["amount"]),
        checkout["bankTransfer"]["reference"],
        "2027-01-31T12:00:00+00:00",
    )
    assert (await api.post_webhook("fakebank", body, headers)).status_code == 200


def expected(old: int, new: int, qty: int, remaining: int, period: int, exp: int) -> str:
    """The docs/api.md#proration formula with exact fractions, rounded half-up (away from zero) once."""
    value = Fraction((new - old) * qty * remaining, period)
    sign = -1 if value < 0 else 1
    rounded = sign * int(abs(value) + Fraction(1, 2))
    if exp == 0:
        return str(rounded)
    text = f"{abs(rounded) / 10**exp:.{exp}f}"
    return ("-" if rounded < 0 else "") + text


@pytest.mark.parametrize(
    ("currency", "old", "new", "qty", "at", "amount"),
    [
        # Half the period left: (50.01 - 30.00) * 1 / 2 = 10.005 → 10.01 (half-up).
        ("USD", "30.00", "50.01", 1, END - timedelta(days=14), "10.01"),
        # Downgrade: -10.005 → -10.01 (away from zero).
        ("USD", "50.01", "30.00", 1, END - timedelta(days=14), "-10.01"),
        # 14d 6h26m40s left of 28d, quantity 3: 20.01 * 3 * 1232800/2419200 = 30.591…
        ("USD", "30.00", "50.01", 3, END - timedelta(days=14, seconds=23200), "30.59"),
        ("VND", "300000", "450001", 1, END - timedelta(days=14), "75001"),
        ("VND", "450001", "300000", 2, END - timedelta(days=7, seconds=1), "-75001"),
        ("JPY", "3000", "4001", 1, END - timedelta(days=14), "501"),
        ("JPY", "4001", "3000", 1, END - timedelta(days=14), "-501"),
        ("JPY", "3000", "4001", 1, END - timedelta(seconds=1), "0"),
    ],
)
async def test_proration_is_exact(
    clock_api: ApiClient,
    clean_database,
    currency: str,
    old: str,
    new: str,
    qty: int,  # type: ignore[no-untyped-def]
    at: datetime,
    amount: str,
) -> None:
    api = clock_api
    amounts = {"USD": ("30.00", "50.01"), "VND": ("300000", "450001"), "JPY": ("3000", "4001")}
    low = amounts[currency][0]
    other = {c: v for c, v in amounts.items() if c != currency}

    def plan_prices(value: str, index: int) -> list[dict[str, str]]:
        return [{"currency": currency, "amount": value}] + [
            {"currency": c, "amount": v[index]} for c, v in other.items()
        ]

    await make_plan(api, "from", prices=plan_prices(old, 0 if old == low else 1))
    await make_plan(api, "to", prices=plan_prices(new, 0 if new == low else 1))
    cid = await make_customer(api, currency=currency)
    sub = await subscribe(api, cid, "from", quantity=qty)
    assert iso(sub["currentPeriodEnd"]) == END
    await set_clock(clean_database.url, at)
    exp = {"USD": 2, "VND": 0, "JPY": 0}[currency]
    remaining = int((END - at).total_seconds())
    want = expected(
        parse_major(old, currency), parse_major(new, currency), qty, remaining, 2419200, exp
    )
    assert want == amount  # the table above is the formula, not a guess

    preview = await change(api, sub["id"], "to", preview=True)
    assert preview["prorationAmount"] == {"amount": amount, "currency": currency}
    assert preview["subscription"]["plan"]["code"] == "from"
    assert iso(preview["effectiveAt"]) == at
    assert await db_rows(clean_database.url, "SELECT id FROM invoice_items") == []

    done = await change(api, sub["id"], "to")
    assert done["prorationAmount"] == {"amount": amount, "currency": currency}
    assert done["subscription"]["plan"]["code"] == "to"
    assert iso(done["subscription"]["currentPeriodEnd"]) == END  # same interval: same period
    items = await db_rows(
        clean_database.url, "SELECT amount_minor, currency, invoiced_at FROM invoice_items"
    )
    if amount == "0":
        assert items == []
    else:
        assert [(i["currency"], i["invoiced_at"]) for i in items] == [(currency, None)]
        assert items[0]["amount_minor"] == parse_major(amount, currency, allow_negative=True)


async def test_prorations_are_billed_by_the_next_renewal(
    clock_api: ApiClient, app_settings: Settings, clean_database
) -> None:  # type: ignore[no-untyped-def]
    api = clock_api
    await make_plan(api, "basic", prices=prices("10.00", "100000", "1000"))
    await make_plan(api)
    cid = await make_customer(api)
    sub = await subscribe(api, cid, "basic", quantity=2)
    await set_clock(clean_database.url, END - timedelta(days=7))  # a quarter left
    done = await change(api, sub["id"], "pro")
    assert done["prorationAmount"] == {"amount": "10.00", "currency": "USD"}  # 20 * 2 / 4
    await set_clock(clean_database.url, END - timedelta(days=2))
    async with runtime_for(app_settings, BILLING, FAKE_ENV, extra_plugins=[FakePlugin()]) as rt:
        renewal = (await create_renewal_checkout(rt, UUID(sub["id"]))).checkout
    assert renewal.amount_minor == 2 * 3000 + 1000
    paid = await complete(api, str(renewal.id))
    # Paid ahead: the period it bought follows the current one.
    assert iso(paid["subscription"]["currentPeriodEnd"]) == END
    assert iso(paid["subscription"]["renewedUntil"]) == datetime(2027, 3, 31, 12, tzinfo=UTC)
    items = await db_rows(clean_database.url, "SELECT invoiced_at FROM invoice_items")
    assert items[0]["invoiced_at"] is not None


async def test_none_changes_now_where_the_provider_can_else_at_period_end(
    clock_api: ApiClient, app_settings: Settings, clean_database
) -> None:  # type: ignore[no-untyped-def]
    api = clock_api
    await make_plan(api)
    await make_plan(
        api,
        "max",
        prices=prices("50.00", "500000", "5000"),
        features=[{"feature": "seats", "limit": "50"}],
    )
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    await set_clock(clean_database.url, T0 + timedelta(days=5))
    # manual can change plans: now, with no proration amount.
    now = await change(api, sub["id"], "max", proration="NONE")
    assert now["prorationAmount"] is None
    assert iso(now["effectiveAt"]) == T0 + timedelta(days=5)
    assert now["subscription"]["plan"]["code"] == "max"
    assert (await entitlement(api, cid, "seats"))["limit"] == "50"

    # fakebank cannot: at the period end, billed by the renewal.
    vn = await make_customer(api, "vn", currency="VND")
    checkout = await checkout_ok(api, customerId=vn, planCode="pro", provider="fakebank")
    await db_rows_update_complete(api, checkout)
    bank_sub = (await api.admin(CHECKOUT, {"id": checkout["id"]}))["checkout"]["subscription"]
    later = await change(api, bank_sub["id"], "max", proration="NONE")
    assert later["prorationAmount"] is None
    assert later["effectiveAt"] == bank_sub["currentPeriodEnd"]
    assert later["subscription"]["plan"]["code"] == "pro"
    assert later["subscription"]["pendingPlan"] == {"code": "max"}
    # Its renewal charges the new plan, which then takes effect.
    async with runtime_for(app_settings, BILLING, FAKE_ENV, extra_plugins=[FakePlugin()]) as rt:
        renewal = (await create_renewal_checkout(rt, UUID(bank_sub["id"]))).checkout
    assert renewal.amount_minor == 500000
    body, headers = bank_transfer(
        100, 500000, renewal.payment_reference, "2027-02-26T00:00:00+00:00"
    )
    assert (await api.post_webhook("fakebank", body, headers)).status_code == 200
    renewed = (await api.admin(SUBSCRIPTION, {"id": bank_sub["id"]}))["subscription"]
    # Paid before the period ends: the new plan waits for the period it paid for.
    period_end = datetime(2027, 3, 5, 12, tzinfo=UTC)
    assert renewed["plan"]["code"] == "pro" and renewed["pendingPlan"] == {"code": "max"}
    assert iso(renewed["pendingPlanAt"]) == period_end
    assert (await entitlement(api, vn, "seats"))["limit"] == "5"
    # Bought on Feb 5: Feb 5 -> Mar 5, renewed to Apr 5 from Mar 5 on.
    assert iso(renewed["currentPeriodStart"]) == datetime(2027, 2, 5, 12, tzinfo=UTC)
    assert iso(renewed["currentPeriodEnd"]) == period_end
    assert iso(renewed["renewedUntil"]) == datetime(2027, 4, 5, 12, tzinfo=UTC)
    await advance(api, period_end - timedelta(seconds=1))
    assert (await entitlement(api, vn, "seats"))["limit"] == "5"
    before = (await api.admin(SUBSCRIPTION, {"id": bank_sub["id"]}))["subscription"]
    assert before["plan"]["code"] == "pro" and iso(before["currentPeriodEnd"]) == period_end
    await advance(api, period_end)
    switched = (await api.admin(SUBSCRIPTION, {"id": bank_sub["id"]}))["subscription"]
    assert switched["plan"]["code"] == "max" and switched["pendingPlan"] is None
    assert switched["status"] == "ACTIVE" and switched["renewedUntil"] is None
    assert iso(switched["currentPeriodStart"]) == period_end
    assert iso(switched["currentPeriodEnd"]) == datetime(2027, 4, 5, 12, tzinfo=UTC)
    assert (await entitlement(api, vn, "seats"))["limit"] == "50"


async def test_a_plan_change_after_paying_ahead_bills_the_next_period_at_the_new_plan(
    clock_api: ApiClient,
) -> None:
    api = clock_api
    await make_plan(api)
    await make_plan(api, "max", prices=prices("50.00", "500000", "5000"))
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    await advance(api, END - timedelta(days=3))
    renewal = (await api.admin(SUBSCRIPTION, {"id": sub["id"]}))["subscription"]["renewalCheckout"]
    await complete(api, renewal["id"])
    # Two days before the end, an upgrade: the rest of this period is prorated, and the next
    # one, bought ahead at the old price, is credited and billed again at the new price.
    await advance(api, END - timedelta(days=2))
    done = await change(api, sub["id"], "max")
    assert done["prorationAmount"] == {"amount": "1.43", "currency": "USD"}  # 20 * 2 / 28
    changed = done["subscription"]
    assert changed["plan"]["code"] == "max" and changed["renewedUntil"] is None
    assert iso(changed["currentPeriodEnd"]) == END
    await advance(api, END - timedelta(days=2, seconds=-1))
    again = (await api.admin(SUBSCRIPTION, {"id": sub["id"]}))["subscription"]["renewalCheckout"]
    assert again["amount"] == {"amount": "21.43", "currency": "USD"}  # 50.00 + 1.43 - 30.00
    await complete(api, again["id"])
    await advance(api, END)
    renewed = (await api.admin(SUBSCRIPTION, {"id": sub["id"]}))["subscription"]
    assert renewed["plan"]["code"] == "max" and renewed["status"] == "ACTIVE"
    assert (iso(renewed["currentPeriodStart"]), iso(renewed["currentPeriodEnd"])) == (
        END,
        datetime(2027, 3, 31, 12, tzinfo=UTC),
    )


async def test_a_plan_change_voids_the_renewal_issued_at_the_old_plan(
    clock_api: ApiClient, clean_database
) -> None:  # type: ignore[no-untyped-def]
    api = clock_api
    await make_plan(api)
    await make_plan(api, "max", prices=prices("50.00", "500000", "5000"))
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    await advance(api, END - timedelta(days=3))
    stale = (await api.admin(SUBSCRIPTION, {"id": sub["id"]}))["subscription"]["renewalCheckout"]
    assert stale["amount"] == {"amount": "30.00", "currency": "USD"}  # the next period at pro
    # An upgrade while that renewal is open: the next period is at max now, so the renewal
    # that would buy it at pro is no longer payable.
    done = await change(api, sub["id"], "max")
    assert done["prorationAmount"] == {"amount": "2.14", "currency": "USD"}  # 20 * 3 / 28
    assert done["subscription"]["renewalCheckout"] is None
    assert (await api.admin(CHECKOUT, {"id": stale["id"]}))["checkout"]["status"] == "EXPIRED"
    # Money for it arrives anyway: recorded and credited; it buys no period at the old plan.
    paid = (await complete(api, stale["id"]))["subscription"]
    assert paid["plan"]["code"] == "max" and paid["pendingPlan"] is None
    assert paid["renewedUntil"] is None
    # The fresh renewal bills the new plan, the proration, less the credit.
    await advance(api, END - timedelta(days=3, seconds=-1))
    fresh = (await api.admin(SUBSCRIPTION, {"id": sub["id"]}))["subscription"]["renewalCheckout"]
    assert fresh["amount"] == {"amount": "22.14", "currency": "USD"}  # 50.00 + 2.14 - 30.00
    await complete(api, fresh["id"])
    await advance(api, END)
    renewed = (await api.admin(SUBSCRIPTION, {"id": sub["id"]}))["subscription"]
    assert (renewed["plan"]["code"], renewed["status"]) == ("max", "ACTIVE")
    assert (iso(renewed["currentPeriodStart"]), iso(renewed["currentPeriodEnd"])) == (
        END,
        datetime(2027, 3, 31, 12, tzinfo=UTC),
    )


async def test_interval_change_starts_a_new_period_and_charges_now(
    clock_api: ApiClient, clean_database
) -> None:  # type: ignore[no-untyped-def]
    api = clock_api
    await make_plan(api)
    await make_plan(api, "annual", interval="YEAR", prices=prices("300.00", "3000000", "30000"))
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    half = END - timedelta(days=14)
    await set_clock(clean_database.url, half)
    done = await change(api, sub["id"], "annual")
    # The new price in full minus the old plan's remaining half: 300.00 - 15.00.
    assert done["prorationAmount"] == {"amount": "285.00", "currency": "USD"}
    moved = done["subscription"]
    assert iso(moved["currentPeriodStart"]) == half
    assert iso(moved["currentPeriodEnd"]) == datetime(2028, 2, 14, 12, tzinfo=UTC)
    due = moved["renewalCheckout"]
    assert due["purpose"] == "invoice" and due["amount"] == {"amount": "285.00", "currency": "USD"}
    paid = await complete(api, due["id"])
    assert paid["status"] == "COMPLETED"
    # Paying the charges does not extend the period.
    assert iso(paid["subscription"]["currentPeriodEnd"]) == datetime(2028, 2, 14, 12, tzinfo=UTC)
    items = await db_rows(clean_database.url, "SELECT amount_minor, invoiced_at FROM invoice_items")
    assert items[0]["amount_minor"] == 28500 and items[0]["invoiced_at"] is not None


async def test_a_renewal_of_a_period_an_interval_change_ended_is_voided_and_credited(
    clock_api: ApiClient, clean_database
) -> None:  # type: ignore[no-untyped-def]
    api = clock_api
    await make_plan(api)
    await make_plan(api, "annual", interval="YEAR", prices=prices("300.00", "3000000", "30000"))
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    await advance(api, END - timedelta(days=3))
    stale = (await api.admin(SUBSCRIPTION, {"id": sub["id"]}))["subscription"]["renewalCheckout"]
    assert stale["purpose"] == "renewal"
    done = await change(api, sub["id"], "annual")
    year_end = datetime(2028, 2, 25, 12, tzinfo=UTC)
    assert iso(done["subscription"]["currentPeriodEnd"]) == year_end
    # The monthly period it renewed is gone: it is no longer payable ...
    assert (await api.admin(CHECKOUT, {"id": stale["id"]}))["checkout"]["status"] == "EXPIRED"
    # ... and money for it anyway buys nothing: it is credited to the next checkout.
    paid = await complete(api, stale["id"])
    assert paid["status"] == "COMPLETED"
    after = paid["subscription"]
    assert iso(after["currentPeriodEnd"]) == year_end and after["renewedUntil"] is None
    credits = await db_rows(
        clean_database.url, "SELECT amount_minor FROM invoice_items WHERE kind = 'credit'"
    )
    assert credits == [{"amount_minor": -3000}]


async def test_plan_change_errors(clock_api: ApiClient) -> None:
    api = clock_api
    await make_plan(api)
    await make_plan(api, "usd_only", prices=[{"currency": "USD", "amount": "5.00"}])
    await make_plan(api, "life", interval="ONE_TIME")
    cid = await make_customer(api, currency="VND")
    sub = await subscribe(api, cid)
    for plan, field, code in [
        ("usd_only", ["input", "planCode"], "UNSUPPORTED_CURRENCY"),
        ("nope", ["input", "planCode"], "NOT_FOUND"),
        ("life", ["input", "planCode"], "INVALID_INPUT"),
        ("pro", ["input", "planCode"], "INVALID_INPUT"),
    ]:
        result = await api.gql(
            CHANGE, {"input": {"subscriptionId": sub["id"], "planCode": plan}}, admin=True
        )
        errors = result.data["changeSubscriptionPlan"]["userErrors"]
        assert [(e["field"], e["code"]) for e in errors] == [(field, code)], plan


async def test_trial_changes_prorate_nothing(clock_api: ApiClient, clean_database) -> None:  # type: ignore[no-untyped-def]
    api = clock_api
    await make_plan(api, trialDays=14)
    await make_plan(api, "max", prices=prices("50.00", "500000", "5000"))
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    await set_clock(clean_database.url, T0 + timedelta(days=3))
    done = await change(api, sub["id"], "max")
    assert done["prorationAmount"] == {"amount": "0.00", "currency": "USD"}
    assert done["subscription"]["status"] == "TRIALING"
    assert done["subscription"]["plan"]["code"] == "max"


# -- provider-managed -------------------------------------------------------------------------

REFS = [{"provider": "fakepay", "ref": "price_pro"}]


@pytest.fixture
async def pay(make_api, clean_database) -> AsyncIterator[tuple[ApiClient, FakePayApi]]:  # type: ignore[no-untyped-def]
    await set_clock(clean_database.url, T0)
    fake = FakePayApi()
    async with make_api(
        plugins=[FakePlugin()],
        env=FAKE_ENV,
        billing=BILLING,
        transports={"fakepay": fake.transport()},
    ) as api:
        yield api, fake


async def managed_subscription(api: ApiClient, fake: FakePayApi) -> tuple[str, str]:
    await make_plan(api, providerRefs=REFS)
    await make_plan(
        api,
        "max",
        prices=prices("50.00", "500000", "5000"),
        providerRefs=[{"provider": "fakepay", "ref": "price_max"}],
    )
    cid = await make_customer(api)
    checkout = await checkout_ok(api, customerId=cid, planCode="pro", provider="fakepay")
    state = {
        "id": "fsub_9",
        "status": "ACTIVE",
        "plan_ref": "price_pro",
        "currency": "USD",
        "current_period_start": "2027-01-31T12:00:00+00:00",
        "current_period_end": "2027-02-28T12:00:00+00:00",
        "customer": "fcus_9",
        "checkout_id": checkout["id"],
        "quantity": 1,
    }
    fake.subscriptions["fsub_9"] = state
    body, headers = pay_event(
        "checkout.completed",
        "2027-01-31T12:01:00+00:00",
        **fake.paid(checkout["id"]),
        subscription=state,
    )
    assert (await api.post_webhook("fakepay", body, headers)).status_code == 200
    sub = (await api.admin(CHECKOUT, {"id": checkout["id"]}))["checkout"]["subscription"]
    return cid, sub["id"]


async def test_managed_operations_go_through_the_provider(
    pay: tuple[ApiClient, FakePayApi], clean_database
) -> None:  # type: ignore[no-untyped-def]
    api, fake = pay
    cid, sub_id = await managed_subscription(api, fake)
    canceled = await api.admin(CANCEL, {"input": {"subscriptionId": sub_id}})
    assert canceled["cancelSubscription"]["subscription"]["cancelAtPeriodEnd"] is True
    assert fake.requests[-1][1:] == ("/subscriptions/fsub_9/cancel", {"at_period_end": True})
    # A delivery still in flight from before the cancel (the provider's answer is dated by
    # its clock) does not undo it.
    before = {**fake.subscriptions["fsub_9"], "cancel_at_period_end": False}
    body, headers = pay_event(
        "subscription.updated", "2027-01-31T12:10:00+00:00", subscription=before
    )
    assert (await api.post_webhook("fakepay", body, headers)).status_code == 200
    shown = (await api.admin(SUBSCRIPTION, {"id": sub_id}))["subscription"]
    assert shown["cancelAtPeriodEnd"] is True
    resumed = (await api.admin(RESUME, {"id": sub_id}))["resumeSubscription"]["subscription"]
    assert resumed["cancelAtPeriodEnd"] is False

    await set_clock(clean_database.url, END - timedelta(days=14))
    changed = await change(api, sub_id, "max")
    assert fake.requests[-1][2] == {"plan_ref": "price_max", "proration": "CREATE_PRORATIONS"}
    assert changed["subscription"]["plan"]["code"] == "max"
    assert changed["prorationAmount"] == {"amount": "10.00", "currency": "USD"}
    items = await db_rows(clean_database.url, "SELECT invoiced_at FROM invoice_items")
    assert items[0]["invoiced_at"] is not None  # the provider bills it; kept for the record

    refused = await api.gql(PAUSE, {"id": sub_id}, admin=True)
    assert [e["code"] for e in refused.data["pauseSubscription"]["userErrors"]] == ["NOT_SUPPORTED"]
    portal = await api.admin(PORTAL, {"id": cid, "url": "https://app.example/account"})
    # The provider's customer id learned when the checkout was created.
    assert portal["createPortalSession"]["url"] == f"https://pay.fake/portal/fcus_{cid[:8]}"


async def test_managed_provider_errors_change_nothing(
    pay: tuple[ApiClient, FakePayApi],
) -> None:
    api, fake = pay
    _, sub_id = await managed_subscription(api, fake)
    fake.fail_with = 402
    result = await api.gql(
        CANCEL, {"input": {"subscriptionId": sub_id, "atPeriodEnd": False}}, admin=True
    )
    payload = result.data["cancelSubscription"]
    assert payload["subscription"] is None
    assert [(e["code"], e["message"]) for e in payload["userErrors"]] == [
        ("PROVIDER_ERROR", "card_declined: no funds")
    ]
    fake.fail_with = 503
    changed = await api.gql(
        CHANGE, {"input": {"subscriptionId": sub_id, "planCode": "max"}}, admin=True
    )
    assert [e["code"] for e in changed.data["changeSubscriptionPlan"]["userErrors"]] == [
        "PROVIDER_UNAVAILABLE"
    ]
    shown = (await api.admin(SUBSCRIPTION, {"id": sub_id}))["subscription"]
    assert shown["status"] == "ACTIVE" and shown["plan"]["code"] == "pro"
    assert shown["cancelAtPeriodEnd"] is False


async def test_portal_needs_a_subscription(clock_api: ApiClient) -> None:
    api = clock_api
    cid = await make_customer(api)
    result = await api.gql(PORTAL, {"id": cid}, admin=True)
    assert [e["code"] for e in result.data["createPortalSession"]["userErrors"]] == [
        "NOT_SUPPORTED"
    ]
    await make_plan(api)
    await subscribe(api, cid)  # manual has no portal
    result = await api.gql(PORTAL, {"id": cid}, admin=True)
    assert [e["code"] for e in result.data["createPortalSession"]["userErrors"]] == [
        "NOT_SUPPORTED"
    ]


async def test_always_invoice_issues_a_checkout_for_the_proration_now(
    clock_api: ApiClient, clean_database
) -> None:  # type: ignore[no-untyped-def]
    api = clock_api
    await make_plan(api)
    await make_plan(api, "max", prices=prices("50.00", "500000", "5000"))
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    await set_clock(clean_database.url, END - timedelta(days=7))
    done = await change(api, sub["id"], "max", proration="ALWAYS_INVOICE")
    assert done["prorationAmount"] == {"amount": "5.00", "currency": "USD"}  # 20 / 4
    due = done["subscription"]["renewalCheckout"]
    assert due["purpose"] == "invoice" and due["amount"]["amount"] == "5.00"
    paid = await complete(api, due["id"])
    assert iso(paid["subscription"]["currentPeriodEnd"]) == END
    # A downgrade's credit waits for the next renewal: no checkout for a negative amount.
    back = await change(api, sub["id"], "pro", proration="ALWAYS_INVOICE")
    assert back["prorationAmount"] == {"amount": "-5.00", "currency": "USD"}
    assert back["subscription"]["renewalCheckout"] is None


PREVIEW = """query($id: ID!) { invoicePreview(subscriptionId: $id) {
  currency lines { description amount { amount currency } } total { amount currency } } }"""


@pytest.mark.parametrize(
    ("currency", "big", "small", "credit", "carried", "then"),
    [
        ("USD", "100.00", "10.00", "-90.00", "-80.00", "-70.00"),
        ("VND", "1000000", "100000", "-900000", "-800000", "-700000"),
    ],
)
async def test_a_credit_larger_than_the_renewal_is_carried_forward(
    clock_api: ApiClient,
    clean_database,  # type: ignore[no-untyped-def]
    currency: str,
    big: str,
    small: str,
    credit: str,
    carried: str,
    then: str,
) -> None:
    api = clock_api
    await make_plan(api, "big", prices=[{"currency": currency, "amount": big}])
    await make_plan(api, "small", prices=[{"currency": currency, "amount": small}])
    cid = await make_customer(api, currency=currency)
    sub = await subscribe(api, cid, "big")
    # A downgrade at the very start of the period credits the whole difference.
    done = await change(api, sub["id"], "small")
    assert done["prorationAmount"] == {"amount": credit, "currency": currency}

    # The renewal costs less than the credit: it is free, and the rest is kept.
    await advance(api, END - timedelta(days=3))
    renewed = (await api.admin(SUBSCRIPTION, {"id": sub["id"]}))["subscription"]
    assert iso(renewed["currentPeriodEnd"]) == END
    assert iso(renewed["renewedUntil"]) == datetime(2027, 3, 31, 12, tzinfo=UTC)
    assert renewed["renewalCheckout"] is None  # completed at once: nothing to pay
    preview = (await api.admin(PREVIEW, {"id": sub["id"]}))["invoicePreview"]
    assert [(line["description"], line["amount"]["amount"]) for line in preview["lines"]] == [
        ("Small", small),
        ("Credit carried forward", carried),
    ]

    # The next renewal uses what is left of it; no money is lost on the way.
    await advance(api, datetime(2027, 3, 28, 12, tzinfo=UTC))
    preview = (await api.admin(PREVIEW, {"id": sub["id"]}))["invoicePreview"]
    assert [line["amount"]["amount"] for line in preview["lines"]] == [small, then]
    renewals = await db_rows(
        clean_database.url,
        "SELECT status, amount_minor FROM checkouts WHERE purpose = 'renewal' ORDER BY created_at",
    )
    assert renewals == [{"status": "COMPLETED", "amount_minor": 0}] * 2
    items = await db_rows(
        clean_database.url,
        "SELECT amount_minor FROM invoice_items WHERE invoiced_at IS NULL",
    )
    # Two renewals of ``small`` were paid from the credit, exactly.
    small_minor = parse_major(small, currency)
    assert items == [{"amount_minor": 2 * small_minor - parse_major(credit[1:], currency)}]
