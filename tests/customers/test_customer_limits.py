"""Security issue #11: what a customer may do and see — one trial and one live subscription per
plan, resuming an admin's pause, operator data and private plans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from billing_helpers import (
    CANCEL,
    CHANGE,
    CHECKOUT,
    CREATE_CHECKOUT,
    PAUSE,
    RESUME,
    SUBSCRIPTION,
    advance,
    checkout_ok,
    complete,
    create_checkout,
    db_rows,
    entitlement,
    iso,
    make_customer,
    make_plan,
    session_for,
    set_clock,
    subscribe,
)
from fakes import FAKE_ENV, FakePlugin, bank_transfer

from billing_gql.runtime import migrate_database
from billing_gql.settings import BillingSettings
from billing_gql.testing import ApiClient

T0 = datetime(2027, 1, 31, 12, 0, 0, tzinfo=UTC)
BILLING = BillingSettings(manual_provider=True, test_clock=True)


@pytest.fixture
async def api(make_api, clean_database) -> AsyncIterator[ApiClient]:  # type: ignore[no-untyped-def]
    await set_clock(clean_database.url, T0)
    async with make_api(plugins=[FakePlugin()], env=FAKE_ENV, billing=BILLING) as client:
        yield client


# -- 5: a customer cannot undo an admin's pause ------------------------------------------------


async def test_a_customer_cannot_resume_a_pause_but_can_undo_its_own_cancel(
    api: ApiClient,
) -> None:
    await make_plan(api)
    cid = await make_customer(api)
    token = await session_for(api, cid)
    sub = await subscribe(api, cid)
    await api.admin(PAUSE, {"id": sub["id"]})
    refused = await api.gql(RESUME, {"id": sub["id"]}, token=token)
    assert refused.error_codes == ["FORBIDDEN"]
    assert refused.data is None
    shown = await api.admin(
        "query($id: ID!) { subscription(id: $id) { status } }", {"id": sub["id"]}
    )
    assert shown["subscription"]["status"] == "PAUSED"
    # The admin resumes it; the customer's own pending cancel is the customer's to undo.
    await api.admin(RESUME, {"id": sub["id"]})
    await api.gql(CANCEL, {"input": {"subscriptionId": sub["id"]}}, token=token)
    undone = await api.gql(RESUME, {"id": sub["id"]}, token=token)
    assert undone.errors == []
    resumed = undone.data["resumeSubscription"]["subscription"]
    assert resumed["status"] == "ACTIVE" and resumed["cancelAtPeriodEnd"] is False


# -- 1: one trial per customer and plan, one live subscription per customer and plan ---------


def codes(payload: dict[str, Any]) -> list[str]:
    return [e["code"] for e in payload["userErrors"]]


async def test_a_bank_transfer_trial_is_once_and_limits_do_not_add_up(
    api: ApiClient, clean_database: Any
) -> None:
    await make_plan(api, trialDays=14)
    cid = await make_customer(api, currency="VND")
    token = await session_for(api, cid)
    buy = {"customerId": cid, "planCode": "pro", "provider": "fakebank"}
    first = await checkout_ok(api, **buy)
    assert first["status"] == "COMPLETED" and first["subscription"]["status"] == "TRIALING"
    # The customer's own token cannot buy the plan again while the trial is live …
    again = await api.gql(CREATE_CHECKOUT, {"input": buy}, token=token)
    assert codes(again.data["createCheckout"]) == ["ALREADY_SUBSCRIBED"]
    assert again.data["createCheckout"]["userErrors"][0]["field"] == ["input", "planCode"]
    assert (await entitlement(api, cid, "seats"))["limit"] == "5"
    # … and once it is canceled, buying again has no trial: it asks for the payment.
    await api.admin(
        CANCEL, {"input": {"subscriptionId": first["subscription"]["id"], "atPeriodEnd": False}}
    )
    paid = await checkout_ok(api, **buy)
    assert paid["status"] == "OPEN" and paid["subscription"] is None
    assert paid["bankTransfer"]["amount"] == {"amount": "300000", "currency": "VND"}
    body, headers = bank_transfer(7, 300000, paid["bankTransfer"]["reference"], "2027-01-31")
    assert (await api.post_webhook("fakebank", body, headers)).status_code == 200
    rows = await db_rows(
        clean_database.url,
        "SELECT status, trial_end FROM subscriptions WHERE customer_id = $1",
        cid,
    )
    assert sorted((r["status"], r["trial_end"] is None) for r in rows) == [
        ("ACTIVE", True),
        ("CANCELED", False),
    ]
    assert (await entitlement(api, cid, "seats"))["limit"] == "5"


async def test_concurrent_trial_checkouts_start_one_trial(
    api: ApiClient, clean_database: Any
) -> None:
    await make_plan(api, trialDays=14)
    cid = await make_customer(api, currency="VND")
    buy = {"customerId": cid, "planCode": "pro", "provider": "fakebank"}
    results = await asyncio.gather(*(create_checkout(api, **buy) for _ in range(3)))
    live = await db_rows(
        clean_database.url,
        "SELECT status FROM subscriptions WHERE customer_id = $1",
        cid,
    )
    assert [r["status"] for r in live] == ["TRIALING"]
    started = [r for r in results if r["checkout"] and r["checkout"]["status"] == "COMPLETED"]
    assert len(started) == 1
    for other in results:
        if other not in started:
            # Refused, or a plain checkout asking for the money (no second trial).
            assert codes(other) == ["ALREADY_SUBSCRIBED"] or (
                other["checkout"]["status"] == "OPEN" and other["checkout"]["subscription"] is None
            )
    assert (await entitlement(api, cid, "seats"))["limit"] == "5"
    redeemed = await db_rows(
        clean_database.url,
        "SELECT count(*) AS n FROM trial_redemptions WHERE customer_id = $1",
        cid,
    )
    assert redeemed[0]["n"] == 1


async def test_a_checkout_completed_after_another_makes_no_second_subscription(
    api: ApiClient, clean_database: Any
) -> None:
    await make_plan(api)
    cid = await make_customer(api)
    # Both created before either completed: nothing live to refuse them yet.
    one = await checkout_ok(api, customerId=cid, planCode="pro", provider="manual")
    two = await checkout_ok(api, customerId=cid, planCode="pro", provider="manual")
    first = await complete(api, one["id"])
    second = await complete(api, two["id"])
    assert second["status"] == "COMPLETED"
    assert second["subscription"]["id"] == first["subscription"]["id"]
    assert "already had a live subscription" in second["error"]
    subs = await db_rows(
        clean_database.url, "SELECT id, status FROM subscriptions WHERE customer_id = $1", cid
    )
    assert [r["status"] for r in subs] == ["ACTIVE"]
    # The money is kept: recorded on the checkout, and credited to the live subscription.
    paid = await db_rows(
        clean_database.url,
        "SELECT amount_paid_minor, error_code FROM checkouts WHERE id = $1",
        UUID(two["id"]),
    )
    assert paid == [{"amount_paid_minor": 3000, "error_code": "ALREADY_SUBSCRIBED"}]
    credit = await db_rows(
        clean_database.url,
        "SELECT kind, amount_minor, currency FROM invoice_items WHERE subscription_id = $1",
        subs[0]["id"],
    )
    assert credit == [{"kind": "credit", "amount_minor": -3000, "currency": "USD"}]
    assert (await entitlement(api, cid, "seats"))["limit"] == "5"


# -- 11: what customers can see and buy ----------------------------------------------------


PLANS = """query($all: Boolean) { plans(includeArchived: $all) {
  code private providerRefs { provider ref currency } } }"""
PLAN = """query($code: String!) { plan(code: $code) { code providerRefs { ref } } }"""
GRANT = """mutation($plan: String!, $c: ID!) { grantPlanAccess(planCode: $plan, customerId: $c) {
  plan { code private } userErrors { field code } } }"""
REVOKE = """mutation($plan: String!, $c: ID!) { revokePlanAccess(planCode: $plan, customerId: $c) {
  plan { code } userErrors { field code } } }"""
REFS = [{"provider": "fakepay", "ref": "price_pro", "currency": None}]


async def test_operator_metadata_and_provider_ids_are_admin_only(api: ApiClient) -> None:
    await make_plan(api)
    cid = await make_customer(api, metadata={"crm_score": 3, "note": "churn risk"})
    token = await session_for(api, cid)
    await subscribe(api, cid)
    seen = """{ viewer { metadata } payments { nodes { providerRef amount { amount } } } }"""
    mine = await api.gql(seen, token=token)
    assert mine.errors == []
    assert mine.data["viewer"]["metadata"] is None
    assert [p["providerRef"] for p in mine.data["payments"]["nodes"]] == [None]
    admin = await api.admin(
        "query($id: ID!) { customer(id: $id) { metadata } payments(customerId: $id) "
        "{ nodes { providerRef } } }",
        {"id": cid},
    )
    assert admin["customer"]["metadata"] == {"crm_score": 3, "note": "churn risk"}
    assert admin["payments"]["nodes"][0]["providerRef"].startswith("manual-")


async def test_archived_plans_and_provider_refs_are_hidden_from_the_public(
    api: ApiClient,
) -> None:
    await make_plan(api, providerRefs=REFS)
    await make_plan(api, "old", providerRefs=REFS)
    await api.admin('mutation { archivePlan(code: "old") { plan { code } } }')
    listing = "query($all: Boolean) { plans(includeArchived: $all) { code providerRefs { ref } } }"
    public = await api.gql(listing, {"all": True})
    assert public.data["plans"] == [{"code": "pro", "providerRefs": []}]
    assert (await api.gql(PLAN, {"code": "old"})).data["plan"] is None
    assert (await api.gql(PLAN, {"code": "pro"})).data["plan"]["providerRefs"] == []
    admin = await api.admin(PLANS, {"all": True})
    assert sorted((p["code"], p["providerRefs"] == REFS) for p in admin["plans"]) == [
        ("old", True),
        ("pro", True),
    ]


async def test_a_private_plan_is_sold_only_by_admins_and_to_customers_granted_it(
    api: ApiClient,
) -> None:
    await make_plan(api)
    await make_plan(api, "vip", private=True)
    cid = await make_customer(api)
    other = await make_customer(api, "usr_2")
    token = await session_for(api, cid)
    buy = {"customerId": cid, "planCode": "vip", "provider": "manual"}
    assert [p["code"] for p in (await api.gql(PLANS, token=token)).data["plans"]] == ["pro"]
    assert [p["code"] for p in (await api.gql(PLANS)).data["plans"]] == ["pro"]
    refused = await api.gql(CREATE_CHECKOUT, {"input": buy}, token=token)
    assert [(e["field"], e["code"]) for e in refused.data["createCheckout"]["userErrors"]] == [
        (["input", "planCode"], "NOT_FOUND")
    ]
    granted = await api.admin(GRANT, {"plan": "vip", "c": cid})
    assert granted["grantPlanAccess"]["plan"] == {"code": "vip", "private": True}
    listed = (await api.gql(PLANS, token=token)).data["plans"]
    assert sorted(p["code"] for p in listed) == ["pro", "vip"]
    allowed = await api.gql(CREATE_CHECKOUT, {"input": buy}, token=token)
    assert allowed.data["createCheckout"]["userErrors"] == []
    # An admin sells it to anyone; a revoked grant closes it again.
    await checkout_ok(api, customerId=other, planCode="vip", provider="manual")
    await api.admin(REVOKE, {"plan": "vip", "c": cid})
    again = await api.gql(CREATE_CHECKOUT, {"input": {**buy, "idempotencyKey": "k2"}}, token=token)
    assert [e["code"] for e in again.data["createCheckout"]["userErrors"]] == ["NOT_FOUND"]
    unknown = await api.gql(GRANT, {"plan": "nope", "c": cid}, admin=True)
    assert unknown.data["grantPlanAccess"]["userErrors"] == [
        {"field": ["planCode"], "code": "NOT_FOUND"}
    ]
    forbidden = await api.gql(GRANT, {"plan": "vip", "c": cid}, token=token)
    assert forbidden.error_codes == ["FORBIDDEN"]


async def test_the_migration_keeps_existing_duplicates_and_counts_past_trials(
    api: ApiClient, clean_database: Any
) -> None:
    """The backfill migration, re-run on data the old code made: two live subscriptions of one
    customer to one plan (both kept, the newer marked), and a trial taken before."""
    await make_plan(api, trialDays=14)
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    conn = await asyncpg.connect(clean_database.url)
    try:
        await conn.execute("DROP INDEX subscriptions_live_plan_key")
        await conn.execute("DELETE FROM migration WHERE name = '2026-12-07T19:52:25:000000'")
        await conn.execute("DELETE FROM trial_redemptions")
        await conn.execute("UPDATE checkouts SET trial_days = 0")
        copy = await conn.fetchval(
            "INSERT INTO subscriptions (customer_id, plan_id, provider, status, currency, "
            "quantity, current_period_start, current_period_end, trial_end, created_at, "
            "updated_at) SELECT customer_id, plan_id, provider, 'ACTIVE', currency, quantity, "
            "current_period_start, current_period_end, NULL, created_at + interval '1 second', "
            "updated_at FROM subscriptions WHERE id = $1 RETURNING id",
            UUID(sub["id"]),
        )
        assert await migrate_database(clean_database.url) == ["2026-12-07T19:52:25:000000"]
        flags = await conn.fetch("SELECT id, legacy_duplicate FROM subscriptions")
        assert {r["id"]: r["legacy_duplicate"] for r in flags} == {
            UUID(sub["id"]): False,
            copy: True,
        }
        redeemed = await conn.fetch("SELECT customer_id, subscription_id FROM trial_redemptions")
        assert [(r["customer_id"], r["subscription_id"]) for r in redeemed] == [
            (UUID(cid), UUID(sub["id"]))
        ]
        assert await conn.fetchval("SELECT trial_days FROM checkouts") == 14
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "UPDATE subscriptions SET legacy_duplicate = false WHERE id = $1", copy
            )
    finally:
        await conn.close()
        await migrate_database(clean_database.url)  # whatever happened, the schema is whole again


async def test_no_plan_change_into_a_plan_the_customer_holds(
    api: ApiClient, clean_database: Any
) -> None:
    await make_plan(api)
    await make_plan(api, "max", features=[{"feature": "seats", "limit": "50"}])
    cid = await make_customer(api)
    pro = await subscribe(api, cid)
    await subscribe(api, cid, "max")
    moved = await api.gql(
        CHANGE, {"input": {"subscriptionId": pro["id"], "planCode": "max"}}, admin=True
    )
    assert moved.data["changeSubscriptionPlan"]["userErrors"] == [
        {
            "field": ["input", "planCode"],
            "code": "ALREADY_SUBSCRIBED",
            "message": 'the customer already has a live subscription to plan "max"',
        }
    ]
    # A change scheduled for the period end (a bank transfer) reserves the plan …
    vn = await make_customer(api, "vn", currency="VND")
    bank = await subscribe_by_transfer(api, vn)
    later = await api.admin(
        CHANGE,
        {"input": {"subscriptionId": bank["id"], "planCode": "max", "proration": "NONE"}},
    )
    assert later["changeSubscriptionPlan"]["subscription"]["pendingPlan"] == {"code": "max"}
    refused = await create_checkout(api, customerId=vn, planCode="max", provider="fakebank")
    assert codes(refused) == ["ALREADY_SUBSCRIBED"]
    # … and should the plan be held by then after all (a race), the change is dropped at the
    # period end instead of failing the worker over and over.
    await db_rows(
        clean_database.url,
        "INSERT INTO subscriptions (customer_id, plan_id, provider, status, currency, quantity, "
        "created_at, updated_at) SELECT $1, id, 'manual', 'ACTIVE', 'VND', 1, now(), now() "
        "FROM plans WHERE code = 'max' RETURNING id",
        UUID(vn),
    )
    await advance(api, iso(bank["currentPeriodEnd"]) + timedelta(hours=1))
    shown = await api.admin(SUBSCRIPTION, {"id": bank["id"]})
    assert shown["subscription"]["plan"] == {"code": "pro"}
    assert shown["subscription"]["pendingPlan"] is None


async def subscribe_by_transfer(api: ApiClient, customer_id: str) -> dict[str, Any]:
    checkout = await checkout_ok(api, customerId=customer_id, planCode="pro", provider="fakebank")
    body, headers = bank_transfer(
        11, int(checkout["amount"]["amount"]), checkout["bankTransfer"]["reference"], "2027-01-31"
    )
    assert (await api.post_webhook("fakebank", body, headers)).status_code == 200
    done = await api.admin(CHECKOUT, {"id": checkout["id"]})
    subscription: dict[str, Any] = done["checkout"]["subscription"]
    return subscription
