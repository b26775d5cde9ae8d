"""createCheckout, manual completion, subscriptions and entitlements through GraphQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from billing_helpers import (
    CHECKOUT,
    COMPLETE_MANUAL,
    ENTITLEMENTS,
    SUBSCRIPTION,
    checkout_ok,
    complete,
    create_checkout,
    db_rows,
    entitlement,
    iso,
    make_customer,
    make_plan,
    runtime_for,
    set_clock,
    subscribe,
)

from billing_gql.checkout.manual import complete_manual_checkout
from billing_gql.checkout.service import CheckoutDraft
from billing_gql.checkout.service import create_checkout as create_checkout_service
from billing_gql.settings import BillingSettings, Route, Settings
from billing_gql.testing import ApiClient

T0 = datetime(2027, 1, 31, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
async def clock_api(make_api, clean_database) -> AsyncIterator[ApiClient]:  # type: ignore[no-untyped-def]
    """The manual provider with the test clock set to 2027-01-31 12:00 UTC."""
    await set_clock(clean_database.url, T0)
    async with make_api(billing=BillingSettings(manual_provider=True, test_clock=True)) as api:
        yield api


async def test_manual_checkout_to_subscription_and_entitlements(clock_api: ApiClient) -> None:
    api = clock_api
    await make_plan(api)
    cid = await make_customer(api, "usr_1")
    checkout = await checkout_ok(api, customerId=cid, planCode="pro", provider="manual", quantity=2)
    assert checkout["status"] == "OPEN"
    assert checkout["amount"] == {"amount": "60.00", "currency": "USD"}
    assert checkout["amountPaid"] == {"amount": "0.00", "currency": "USD"}
    assert checkout["url"] is None and checkout["subscription"] is None
    assert iso(checkout["expiresAt"]) == T0 + timedelta(minutes=60)
    assert checkout["customer"]["externalId"] == "usr_1"

    done = await complete(api, checkout["id"])
    assert done["status"] == "COMPLETED"
    assert done["amountPaid"] == {"amount": "60.00", "currency": "USD"}
    sub = done["subscription"]
    assert sub["status"] == "ACTIVE" and sub["quantity"] == 2 and sub["currency"] == "USD"
    assert sub["provider"] == "manual" and sub["plan"]["code"] == "pro"
    assert iso(sub["currentPeriodStart"]) == T0
    assert iso(sub["currentPeriodEnd"]) == datetime(2027, 2, 28, 12, tzinfo=UTC)
    assert sub["trialEnd"] is None and sub["cancelAtPeriodEnd"] is False

    # Quantity does not multiply limits; a feature without limit is unlimited.
    assert await entitlement(api, cid, "seats") == {
        "feature": "seats",
        "enabled": True,
        "limit": "5",
        "used": "0",
        "remaining": "5",
    }
    assert await entitlement(api, cid, "sso") == {
        "feature": "sso",
        "enabled": True,
        "limit": None,
        "used": "0",
        "remaining": None,
    }
    zero = {"enabled": False, "limit": "0", "used": "0", "remaining": "0"}
    assert await entitlement(api, cid, "nope") == {"feature": "nope", **zero}
    unknown = "00000000-0000-0000-0000-000000000000"
    assert await entitlement(api, unknown, "seats") == {"feature": "seats", **zero}
    by_external = await api.admin(
        '{ entitlement(externalCustomerId: "usr_1", feature: "seats") { enabled limit } }'
    )
    assert by_external["entitlement"] == {"enabled": True, "limit": "5"}
    listed = await api.admin(ENTITLEMENTS, {"c": cid})
    assert [e["feature"] for e in listed["entitlements"]] == ["seats", "sso"]

    data = await api.admin(
        "query($id: ID) { customer(id: $id) { subscriptions { id status } "
        "entitlements { feature limit } } }",
        {"id": cid},
    )
    assert data["customer"]["subscriptions"] == [{"id": sub["id"], "status": "ACTIVE"}]
    assert data["customer"]["entitlements"] == [
        {"feature": "seats", "limit": "5"},
        {"feature": "sso", "limit": None},
    ]
    again = await api.admin(SUBSCRIPTION, {"id": sub["id"]})
    assert again["subscription"]["id"] == sub["id"]
    payments_again = await api.admin(CHECKOUT, {"id": checkout["id"]})
    assert payments_again["checkout"]["status"] == "COMPLETED"


async def test_completing_twice_is_a_no_op(api: ApiClient) -> None:
    await make_plan(api)
    cid = await make_customer(api)
    checkout = await checkout_ok(api, customerId=cid, planCode="pro", provider="manual")
    first = await complete(api, checkout["id"])
    second = await complete(api, checkout["id"])
    assert second["subscription"]["id"] == first["subscription"]["id"]
    assert second["amountPaid"] == {"amount": "30.00", "currency": "USD"}


async def test_twenty_concurrent_completions_make_one_subscription(
    api: ApiClient, app_settings: Settings
) -> None:
    await make_plan(api)
    cid = await make_customer(api)
    checkout = await checkout_ok(api, customerId=cid, planCode="pro", provider="manual")
    checkout_id = UUID(checkout["id"])
    async with runtime_for(app_settings, BillingSettings(manual_provider=True)) as rt:
        done = await asyncio.gather(*[complete_manual_checkout(rt, checkout_id) for _ in range(20)])
    assert {c.status for c in done} == {"COMPLETED"}
    assert len({c.subscription_id for c in done}) == 1
    assert {c.amount_paid_minor for c in done} == {3000}
    data = await api.admin(
        "query($c: ID) { subscriptions(customerId: $c) { edges { node { id status } } } }",
        {"c": cid},
    )
    assert data["subscriptions"]["edges"] == [
        {"node": {"id": str(done[0].subscription_id), "status": "ACTIVE"}}
    ]
    # Through the API too, a repeat is a no-op returning the same subscription.
    again = await api.admin(COMPLETE_MANUAL, {"id": checkout["id"]})
    assert again["completeManualCheckout"]["checkout"]["subscription"]["id"] == str(
        done[0].subscription_id
    )


async def test_trial_plan_starts_trialing(clock_api: ApiClient) -> None:
    api = clock_api
    await make_plan(api, trialDays=14)
    cid = await make_customer(api)
    sub = await subscribe(api, cid)
    assert sub["status"] == "TRIALING"
    assert iso(sub["trialEnd"]) == T0 + timedelta(days=14)
    assert iso(sub["currentPeriodEnd"]) == T0 + timedelta(days=14)
    assert (await entitlement(api, cid, "seats"))["enabled"] is True


async def test_one_time_plan_records_only_the_payment(api: ApiClient) -> None:
    await make_plan(api, "lifetime", interval="ONE_TIME", features=[{"feature": "export"}])
    cid = await make_customer(api)
    checkout = await checkout_ok(api, customerId=cid, planCode="lifetime", provider="manual")
    done = await complete(api, checkout["id"])
    assert done["status"] == "COMPLETED" and done["subscription"] is None
    assert (await entitlement(api, cid, "export"))["enabled"] is True
    subs = await api.admin(
        "query($c: ID) { customer(id: $c) { subscriptions { id } } }", {"c": cid}
    )
    assert subs["customer"]["subscriptions"] == []


async def test_currency_choice_and_amounts(api: ApiClient) -> None:
    await make_plan(api)
    vn = await make_customer(api, "vn", currency="VND")
    plain = await make_customer(api, "plain")
    by_customer = await checkout_ok(
        api, customerId=vn, planCode="pro", provider="manual", quantity=3
    )
    assert by_customer["amount"] == {"amount": "900000", "currency": "VND"}
    by_plan = await checkout_ok(api, customerId=plain, planCode="pro", provider="manual")
    assert by_plan["amount"] == {"amount": "30.00", "currency": "USD"}
    explicit = await checkout_ok(
        api, customerId=vn, planCode="pro", provider="manual", currency="jpy"
    )
    assert explicit["amount"] == {"amount": "3000", "currency": "JPY"}


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"currency": "EUR"}, ["input", "currency"], "UNSUPPORTED_CURRENCY"),
        ({"currency": "XXY"}, ["input", "currency"], "INVALID_CURRENCY"),
        ({"planCode": "nope"}, ["input", "planCode"], "NOT_FOUND"),
        ({"planCode": "old"}, ["input", "planCode"], "PLAN_ARCHIVED"),
        ({"quantity": 0}, ["input", "quantity"], "INVALID_INPUT"),
        ({"provider": "stripe"}, ["input", "provider"], "PROVIDER_NOT_CONFIGURED"),
        ({"provider": None}, ["input", "provider"], "NO_PROVIDER"),
        (
            {"customerId": "00000000-0000-0000-0000-000000000000"},
            ["input", "customerId"],
            "NOT_FOUND",
        ),
        ({"successUrl": "javascript:alert(1)"}, ["input", "successUrl"], "INVALID_INPUT"),
        ({"idempotencyKey": ""}, ["input", "idempotencyKey"], "INVALID_INPUT"),
    ],
)
async def test_create_checkout_user_errors(
    api: ApiClient, clean_database, change: dict[str, object], field: list[str], code: str
) -> None:  # type: ignore[no-untyped-def]
    await make_plan(api)
    await make_plan(api, "old")
    await api.admin('mutation { archivePlan(code: "old") { plan { archived } } }')
    cid = await make_customer(api)
    payload = await create_checkout(
        api, **{"customerId": cid, "planCode": "pro", "provider": "manual", **change}
    )
    assert payload["checkout"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [(field, code)]
    # Nothing written: not even a checkout that failed.
    assert await db_rows(clean_database.url, "SELECT id FROM checkouts") == []


async def test_routes_choose_the_provider(make_api) -> None:  # type: ignore[no-untyped-def]
    billing = BillingSettings(manual_provider=True, routes=(Route("VN", "manual"),))
    async with make_api(billing=billing) as api:
        await make_plan(api)
        vn = await make_customer(api, "vn", country="VN")
        us = await make_customer(api, "us", country="US")
        assert (await checkout_ok(api, customerId=vn, planCode="pro"))["provider"] == "manual"
        refused = await create_checkout(api, customerId=us, planCode="pro")
        assert [e["code"] for e in refused["userErrors"]] == ["NO_PROVIDER"]


async def test_idempotency_key_is_scoped_per_customer(api: ApiClient) -> None:
    await make_plan(api)
    await make_plan(api, "team")
    ann = await make_customer(api, "ann")
    bob = await make_customer(api, "bob")
    base = {"planCode": "pro", "provider": "manual", "idempotencyKey": "k1"}
    first = await checkout_ok(api, customerId=ann, **base)
    again = await checkout_ok(api, customerId=ann, **base)
    assert again["id"] == first["id"]
    other = await checkout_ok(api, customerId=bob, **base)
    assert other["id"] != first["id"]
    conflict = await create_checkout(api, customerId=ann, **{**base, "planCode": "team"})
    assert conflict["checkout"] is None
    assert [(e["field"], e["code"]) for e in conflict["userErrors"]] == [
        (["input", "idempotencyKey"], "IDEMPOTENCY_CONFLICT")
    ]
    quantity = await create_checkout(api, customerId=ann, **{**base, "quantity": 2})
    assert [e["code"] for e in quantity["userErrors"]] == ["IDEMPOTENCY_CONFLICT"]


async def test_concurrent_requests_with_one_key_make_one_checkout(
    api: ApiClient, app_settings: Settings
) -> None:
    await make_plan(api)
    cid = await make_customer(api)
    draft = CheckoutDraft(
        customer_id=UUID(cid), plan_code="pro", provider="manual", idempotency_key="same"
    )
    async with runtime_for(app_settings, BillingSettings(manual_provider=True)) as rt:
        results = await asyncio.gather(*[create_checkout_service(rt, draft) for _ in range(10)])
    assert all(r.error is None for r in results)
    assert len({r.checkout.id for r in results}) == 1
    assert {r.checkout.prepared_at is not None for r in results} == {True}
