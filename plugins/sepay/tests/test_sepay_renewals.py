"""Push renewals paid by bank transfer, driven by the test clock (``advanceClock``): each period
billing-gql issues a renewal checkout with a new reference and VietQR instructions; a transfer
pays it and extends the period; an unpaid one goes PAST_DUE, then EXPIRED; money arriving
after that still counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sepay_helpers import (
    PRICE,
    SUBSCRIPTION,
    create_checkout,
    db_rows,
    deliver,
    entitlements,
    get_checkout,
    iso,
    make_customer,
    make_plan,
    open_checkout,
    qr_params,
    send,
    set_clock,
)

import billing_gql_sepay.plugin
from billing_gql.settings import BillingSettings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql_sepay.testing import FakeSePay
from conftest import ROUTES

T0 = datetime(2027, 1, 31, 3, 0, tzinfo=UTC)  # 10:00 in Hanoi
ADVANCE = """mutation($to: DateTime!) { advanceClock(to: $to) { now userErrors { code } } }"""


@pytest.fixture
async def clock_api(
    make_api: Any, fake: FakeSePay, clean_database: TestDatabase
) -> AsyncIterator[ApiClient]:
    await set_clock(clean_database.url, T0)
    billing = BillingSettings(manual_provider=True, routes=ROUTES, test_clock=True)
    async with make_api(
        plugins=[billing_gql_sepay.plugin],
        env=fake.env(api=False),
        transports={"sepay": fake.transport()},
        billing=billing,
    ) as api:
        yield api


async def advance(api: ApiClient, to: datetime) -> datetime:
    data = await api.admin(ADVANCE, {"to": to.isoformat()})
    return iso(data["advanceClock"]["now"])


async def subscription(api: ApiClient, sub_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (await api.admin(SUBSCRIPTION, {"id": sub_id}))["subscription"]
    return found


async def test_renewals_by_transfer_paid_then_lapsed(clock_api: ApiClient, fake: FakeSePay) -> None:
    api = clock_api
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    first_reference = checkout["bankTransfer"]["reference"]
    await deliver(api, fake, PRICE, f"{first_reference} thanh toan", at=T0)
    sub = (await get_checkout(api, checkout["id"]))["subscription"]
    sub_id = sub["id"]
    assert sub["status"] == "ACTIVE"
    period_end = iso(sub["currentPeriodEnd"])
    assert period_end == datetime(2027, 2, 28, 3, tzinfo=UTC)

    # Three days before the period ends (BILLING_GQL_RENEWAL_LEAD_DAYS), a renewal is issued.
    await advance(api, period_end - timedelta(days=3, seconds=1))
    assert (await subscription(api, sub_id))["renewalCheckout"] is None
    await advance(api, period_end - timedelta(days=3))
    renewal = (await subscription(api, sub_id))["renewalCheckout"]
    assert renewal["status"] == "OPEN" and renewal["purpose"] == "renewal"
    assert renewal["amount"] == {"amount": "199000", "currency": "VND"}
    bt = renewal["bankTransfer"]
    reference = bt["reference"]
    assert reference != first_reference and reference.startswith("BG")
    assert bt["amount"] == {"amount": "199000", "currency": "VND"}
    assert qr_params(bt["qrCodeUrl"]) == {
        "acc": fake.account_number,
        "bank": fake.bank_code,
        "amount": "199000",
        "des": reference,
    }
    # The customer pays in parts (SePay's retry of the first part counts once).
    now = period_end - timedelta(days=2)
    await advance(api, now)
    part = await deliver(api, fake, 99_000, f"{reference} gia han", at=now)
    await deliver(api, fake, 99_000, f"{reference} gia han", at=now)  # a second, distinct one
    open_renewal = await get_checkout(api, renewal["id"])
    assert open_renewal["status"] == "OPEN"
    assert open_renewal["amountPaid"]["amount"] == "198000"
    assert open_renewal["bankTransfer"]["amount"]["amount"] == "1000"
    assert (await subscription(api, sub_id))["currentPeriodEnd"] == sub["currentPeriodEnd"]
    assert (await send(api, fake.delivery(part))).status_code == 200
    assert (await get_checkout(api, renewal["id"]))["amountPaid"]["amount"] == "198000"
    await deliver(api, fake, 1_000, f"{reference.lower()} con thieu", code=None, at=now)
    paid = await get_checkout(api, renewal["id"])
    assert paid["status"] == "COMPLETED" and paid["amountPaid"]["amount"] == "199000"
    # Paid two days ahead: the current period runs to its end; the paid one follows.
    paid_ahead = await subscription(api, sub_id)
    assert paid_ahead["status"] == "ACTIVE" and paid_ahead["renewalCheckout"] is None
    assert iso(paid_ahead["currentPeriodStart"]) == T0
    assert iso(paid_ahead["currentPeriodEnd"]) == period_end
    next_end = iso(paid_ahead["renewedUntil"])
    assert next_end == datetime(2027, 3, 31, 3, tzinfo=UTC)
    # Across the old period end nothing lapses: it was paid.
    await advance(api, period_end + timedelta(hours=1))
    renewed = await subscription(api, sub_id)
    assert renewed["status"] == "ACTIVE" and renewed["renewedUntil"] is None
    assert iso(renewed["currentPeriodStart"]) == period_end
    assert iso(renewed["currentPeriodEnd"]) == next_end

    # The next renewal is left unpaid.
    await advance(api, next_end - timedelta(days=3))
    unpaid = (await subscription(api, sub_id))["renewalCheckout"]
    assert unpaid["bankTransfer"]["reference"] not in (reference, first_reference)
    await advance(api, next_end)
    lapsed = await subscription(api, sub_id)
    assert lapsed["status"] == "PAST_DUE"
    assert lapsed["renewalCheckout"]["id"] == unpaid["id"]  # still payable during the grace
    assert (await entitlements(api, customer))["seats"]["enabled"] is True
    # BILLING_GQL_GRACE_DAYS (3) later it expires, and its renewal with it.
    await advance(api, next_end + timedelta(days=3))
    expired = await subscription(api, sub_id)
    assert expired["status"] == "EXPIRED" and expired["renewalCheckout"] is None
    assert (await get_checkout(api, unpaid["id"]))["status"] == "EXPIRED"
    assert await entitlements(api, customer) == {}

    # The money arrives late anyway: the expired renewal completes and access is back.
    late = next_end + timedelta(days=5)
    await advance(api, late)
    await deliver(api, fake, PRICE, f"{unpaid['bankTransfer']['reference']} tre", at=late)
    assert (await get_checkout(api, unpaid["id"]))["status"] == "COMPLETED"
    back = await subscription(api, sub_id)
    assert back["status"] == "ACTIVE"
    assert iso(back["currentPeriodStart"]) == late  # the paid period starts when it was paid
    assert (await entitlements(api, customer))["seats"]["enabled"] is True


async def test_a_renewal_whose_webhook_was_lost_is_paid_by_the_scheduled_reconciliation(
    make_api: Any, fake: FakeSePay, clean_database: TestDatabase
) -> None:
    await set_clock(clean_database.url, T0)
    billing = BillingSettings(manual_provider=True, routes=ROUTES, test_clock=True)
    async with make_api(
        plugins=[billing_gql_sepay.plugin],
        env=fake.env(),  # with API_TOKEN: the worker reconciles every 15 minutes
        transports={"sepay": fake.transport()},
        billing=billing,
    ) as api:
        await make_plan(api)
        customer = await make_customer(api)
        checkout = await open_checkout(api, customer)
        await deliver(api, fake, PRICE, checkout["bankTransfer"]["reference"], at=T0)
        sub = (await get_checkout(api, checkout["id"]))["subscription"]
        period_end = iso(sub["currentPeriodEnd"])
        await advance(api, period_end - timedelta(days=3))
        renewal = (await subscription(api, sub["id"]))["renewalCheckout"]
        paid_at = period_end - timedelta(days=1)
        await advance(api, paid_at)
        # The buyer pays; SePay's webhook never reaches us.
        fake.pay(renewal["bankTransfer"]["reference"], PRICE, at=paid_at)
        # The worker's next scheduled reconciliation (before the period end) finds it.
        await advance(api, period_end)
        renewed = await subscription(api, sub["id"])
        assert renewed["status"] == "ACTIVE"
        assert iso(renewed["currentPeriodStart"]) == period_end
        assert (await get_checkout(api, renewal["id"]))["status"] == "COMPLETED"


async def test_a_trial_starts_without_a_transfer_and_its_end_is_paid_by_one(
    clock_api: ApiClient, fake: FakeSePay
) -> None:
    api = clock_api
    await make_plan(api, trialDays=14)
    customer = await make_customer(api)
    payload = await create_checkout(api, customerId=customer, planCode="pro")
    assert payload["userErrors"] == []
    checkout = payload["checkout"]
    # Nothing to transfer now: the trial runs at once (paying now would pay twice).
    assert checkout["provider"] == "sepay" and checkout["status"] == "COMPLETED"
    assert checkout["bankTransfer"] is None and checkout["amountPaid"]["amount"] == "0"
    sub = checkout["subscription"]
    assert sub["status"] == "TRIALING"
    trial_end = iso(sub["currentPeriodEnd"])
    assert trial_end == T0 + timedelta(days=14)
    assert (await entitlements(api, customer))["seats"]["enabled"] is True
    # The renewal before the trial ends asks for the price by transfer.
    await advance(api, trial_end - timedelta(days=3))
    renewal = (await subscription(api, sub["id"]))["renewalCheckout"]
    assert renewal["amount"] == {"amount": "199000", "currency": "VND"}
    await deliver(
        api, fake, PRICE, renewal["bankTransfer"]["reference"], at=trial_end - timedelta(days=3)
    )
    await advance(api, trial_end + timedelta(hours=1))
    paid = await subscription(api, sub["id"])
    assert paid["status"] == "ACTIVE"
    assert iso(paid["currentPeriodStart"]) == trial_end
    assert iso(paid["currentPeriodEnd"]) == datetime(2027, 3, 14, 3, tzinfo=UTC)


CHANGE = """mutation($input: ChangeSubscriptionPlanInput!) { changeSubscriptionPlan(input: $input) {
  prorationAmount { amount currency } subscription { id plan { code } renewalCheckout {
    id status purpose amount { amount currency } bankTransfer { reference amount { amount } } } }
  userErrors { code } } }"""
PREVIEW = """query($id: ID!) { invoicePreview(subscriptionId: $id) {
  lines { description amount { amount } } } }"""


@pytest.mark.parametrize("first", ["late_transfer", "renewal"])
async def test_items_of_an_expired_checkout_paid_late_are_billed_once(
    clock_api: ApiClient, fake: FakeSePay, clean_database: TestDatabase, first: str
) -> None:
    api = clock_api
    await make_plan(api)
    await make_plan(
        api,
        "max",
        prices=[{"currency": "VND", "amount": "399000"}, {"currency": "USD", "amount": "19.00"}],
    )
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    await deliver(api, fake, PRICE, f"{checkout['bankTransfer']['reference']} mua", at=T0)
    sub_id = (await get_checkout(api, checkout["id"]))["subscription"]["id"]
    period_end = datetime(2027, 2, 28, 3, tzinfo=UTC)

    # Half-way through the period, an upgrade charged now: 200000 × 14/28 days.
    half = T0 + timedelta(days=14)
    await advance(api, half)
    changed = (
        await api.admin(
            CHANGE,
            {"input": {"subscriptionId": sub_id, "planCode": "max", "proration": "ALWAYS_INVOICE"}},
        )
    )["changeSubscriptionPlan"]
    assert changed["prorationAmount"] == {"amount": "100000", "currency": "VND"}
    charges = changed["subscription"]["renewalCheckout"]
    assert charges["purpose"] == "invoice" and charges["amount"]["amount"] == "100000"
    # Left unpaid, it expires after a day; the renewal then bills its item.
    await advance(api, half + timedelta(days=2))
    assert (await get_checkout(api, charges["id"]))["status"] == "EXPIRED"
    await advance(api, period_end - timedelta(days=3))
    renewal = (await subscription(api, sub_id))["renewalCheckout"]
    assert renewal["purpose"] == "renewal"
    assert renewal["amount"] == {"amount": "499000", "currency": "VND"}  # 399000 + 100000

    late_at = period_end - timedelta(days=2)
    await advance(api, late_at)
    late = charges["bankTransfer"]["reference"]
    if first == "late_transfer":
        # The money for the expired charges arrives after all: they are its, not the renewal's.
        await deliver(api, fake, 100_000, f"{late} tra cham", at=late_at)
        assert (await get_checkout(api, charges["id"]))["status"] == "COMPLETED"
        reduced = await get_checkout(api, renewal["id"])
        assert reduced["status"] == "OPEN"
        assert reduced["amount"] == {"amount": "399000", "currency": "VND"}
        assert reduced["bankTransfer"]["amount"] == {"amount": "399000", "currency": "VND"}
        assert qr_params(reduced["bankTransfer"]["qrCodeUrl"])["amount"] == "399000"
        await deliver(api, fake, 399_000, f"{renewal['bankTransfer']['reference']} gia han")
        assert (await get_checkout(api, renewal["id"]))["status"] == "COMPLETED"
        credits: list[str] = []
    else:
        # The renewal is paid in full (charges included), then the old transfer lands too.
        await deliver(api, fake, 499_000, f"{renewal['bankTransfer']['reference']} gia han")
        assert (await get_checkout(api, renewal["id"]))["status"] == "COMPLETED"
        await deliver(api, fake, 100_000, f"{late} tra cham", at=late_at)
        assert (await get_checkout(api, charges["id"]))["status"] == "COMPLETED"
        credits = ["-100000"]  # paid twice: credited to the next renewal
    item = await db_rows(
        clean_database.url,
        "SELECT checkout_id::text AS holder, invoiced_at IS NOT NULL AS billed "
        "FROM invoice_items WHERE kind = 'proration'",
    )
    billed_by = charges["id"] if first == "late_transfer" else renewal["id"]
    assert item == [{"holder": billed_by, "billed": True}]
    preview = (await api.admin(PREVIEW, {"id": sub_id}))["invoicePreview"]
    assert [line["amount"]["amount"] for line in preview["lines"]][1:] == credits
    paid_ahead = await subscription(api, sub_id)
    assert paid_ahead["status"] == "ACTIVE" and iso(paid_ahead["currentPeriodEnd"]) == period_end
    await advance(api, period_end)
    renewed = await subscription(api, sub_id)
    assert renewed["status"] == "ACTIVE" and iso(renewed["currentPeriodStart"]) == period_end


METERED = """query($id: ID!, $c: ID!) {
  subscription(id: $id) { status currentPeriodStart currentPeriodEnd renewedUntil
    renewalCheckout { id } }
  usage(customerId: $c, meter: "exports") { value from to }
  invoicePreview(subscriptionId: $id) { periodStart periodEnd
    lines { description quantity amount { amount } } }
  entitlement(customerId: $c, feature: "exports") { enabled limit used remaining } }"""
RECORD = """mutation($input: RecordUsageInput!) { recordUsage(input: $input) {
  accepted userErrors { code } } }"""


async def test_a_transfer_two_days_early_keeps_the_period_until_it_ends(
    clock_api: ApiClient, fake: FakeSePay
) -> None:
    """A renewal paid by transfer two days before the period ends: exports made in those two
    days count in the period they were made in (usage, invoicePreview, the metered limit);
    the paid period starts exactly at the period end."""
    api = clock_api
    await api.admin(
        """mutation { createMeter(input: {code: "exports", name: "Exports",
           aggregation: COUNT}) { meter { code } } }"""
    )
    await make_plan(
        api,
        features=[{"feature": "exports", "limit": "10"}],
        charges=[{"meter": "exports", "model": "PER_UNIT", "currency": "VND", "unitAmount": "500"}],
    )
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    await deliver(api, fake, PRICE, checkout["bankTransfer"]["reference"], at=T0)
    sub_id = (await get_checkout(api, checkout["id"]))["subscription"]["id"]
    end, next_end = datetime(2027, 2, 28, 3, tzinfo=UTC), datetime(2027, 3, 31, 3, tzinfo=UTC)
    exported = 0

    async def export(count: int, when: datetime) -> None:
        nonlocal exported
        await advance(api, when)
        batch = [
            {"id": f"exp-{exported + i}", "customerId": customer, "meter": "exports"}
            for i in range(count)
        ]
        exported += count
        done = await api.admin(RECORD, {"input": {"events": batch}})
        assert done["recordUsage"] == {"accepted": count, "userErrors": []}

    async def state() -> dict[str, Any]:
        found: dict[str, Any] = await api.admin(METERED, {"id": sub_id, "c": customer})
        return found

    await export(5, T0 + timedelta(days=20))
    await advance(api, end - timedelta(days=3))
    renewal = (await subscription(api, sub_id))["renewalCheckout"]
    paid_at = end - timedelta(days=2)
    await advance(api, paid_at)
    await deliver(api, fake, PRICE, f"{renewal['bankTransfer']['reference']} gia han", at=paid_at)
    assert (await get_checkout(api, renewal["id"]))["status"] == "COMPLETED"
    await export(3, end - timedelta(days=1))
    await export(1, end - timedelta(minutes=1))

    before = await state()
    sub = before["subscription"]
    assert sub["status"] == "ACTIVE" and sub["renewalCheckout"] is None
    assert (iso(sub["currentPeriodStart"]), iso(sub["currentPeriodEnd"])) == (T0, end)
    assert iso(sub["renewedUntil"]) == next_end
    assert before["usage"]["value"] == "9"
    assert (iso(before["usage"]["from"]), iso(before["usage"]["to"])) == (T0, end)
    preview = before["invoicePreview"]
    assert (iso(preview["periodStart"]), iso(preview["periodEnd"])) == (T0, end)
    assert [(x["description"], x["quantity"], x["amount"]["amount"]) for x in preview["lines"]] == [
        ("Pro", "1", "199000"),
        ("Exports", "9", "4500"),
    ]
    assert before["entitlement"] == {"enabled": True, "limit": "10", "used": "9", "remaining": "1"}

    await advance(api, end)
    await export(2, end + timedelta(hours=2))
    after = await state()
    sub = after["subscription"]
    assert sub["status"] == "ACTIVE" and sub["renewedUntil"] is None
    assert (iso(sub["currentPeriodStart"]), iso(sub["currentPeriodEnd"])) == (end, next_end)
    assert after["usage"]["value"] == "2"
    assert (iso(after["usage"]["from"]), iso(after["usage"]["to"])) == (end, next_end)
    # The new period's price and usage; and the closed period's usage (9 exports), billed in
    # arrears by a checkout of its own (the renewal was paid ahead): pending until it is paid.
    assert [x["quantity"] for x in after["invoicePreview"]["lines"]] == ["1", "2", "9"]
    assert (await subscription(api, sub_id))["renewalCheckout"]["amount"]["amount"] == "4500"
    assert after["entitlement"]["used"] == "2" and after["entitlement"]["remaining"] == "8"
