"""Provider-managed checkouts and webhooks with the fake providers: signatures, duplicates,
out-of-order snapshots, concurrent completions, failed applies, bank-transfer matching."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from billing_helpers import (
    CHECKOUT,
    DEV,
    SUBSCRIPTION,
    checkout_ok,
    create_checkout,
    db_rows,
    entitlement,
    iso,
    make_customer,
    make_plan,
    set_clock,
)
from fakes import FAKE_ENV, FakeBank, FakePayApi, FakePlugin, bank_transfer, pay_event

from billing_gql.plugins.types import WebhookRequest
from billing_gql.provider_webhooks.apply import apply_delivery, apply_due_deliveries
from billing_gql.provider_webhooks.inbox import store_delivery
from billing_gql.runtime import Runtime
from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import ApiClient

T0 = datetime(2027, 1, 31, 12, 0, 0, tzinfo=UTC)
REFS = [
    {"provider": "fakepay", "ref": "price_pro_usd", "currency": "USD"},
    {"provider": "fakepay", "ref": "price_pro"},
]


@dataclass
class Env:
    api: ApiClient
    fake: FakePayApi
    db_url: str
    settings: Settings


@pytest.fixture
async def env(make_api, clean_database, app_settings) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    await set_clock(clean_database.url, T0)
    fake = FakePayApi()
    billing = BillingSettings(test_clock=True)
    async with make_api(
        plugins=[FakePlugin()],
        env=FAKE_ENV,
        billing=billing,
        transports={"fakepay": fake.transport()},
        outbound=DEV,  # the domain-event tests deliver to a loopback endpoint
    ) as api:
        settings = replace(
            app_settings, billing=billing, plugins=replace(app_settings.plugins, env=FAKE_ENV)
        )
        yield Env(api, fake, clean_database.url, settings)


async def worker(env: Env) -> Runtime:
    """A second runtime on the same database, as the worker process would run."""
    return await Runtime.start(
        env.settings,
        extra_plugins=[FakePlugin()],
        transports={"fakepay": env.fake.transport()},
        apply_migrations=False,
    )


async def pay_checkout(env: Env, customer: str, **extra: Any) -> dict[str, Any]:
    return await checkout_ok(
        env.api, customerId=customer, planCode="pro", provider="fakepay", **extra
    )


def snapshot(checkout_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "fsub_1",
        "status": "ACTIVE",
        "plan_ref": "price_pro_usd",
        "current_period_start": "2027-01-31T12:00:00+00:00",
        "current_period_end": "2027-02-28T12:00:00+00:00",
        "currency": "usd",
        "quantity": 1,
        "customer": "fcus_1",
        "checkout_id": checkout_id,
        **fields,
    }


async def post(env: Env, delivery: tuple[bytes, dict[str, str]], provider: str = "fakepay") -> Any:
    response = await env.api.post_webhook(provider, delivery[0], delivery[1])
    assert response.status_code == 200, response.text
    return response.json()


async def test_hosted_checkout_calls_the_provider_with_our_ids(env: Env) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    checkout = await pay_checkout(env, cid, currency="JPY")
    assert checkout["url"] == "https://pay.fake/fcs_1"
    assert checkout["amount"] == {"amount": "3000", "currency": "JPY"}
    sent = env.fake.checkouts["fcs_1"]
    assert sent["price"] == "price_pro"  # no JPY ref: the currency-less one
    assert sent["metadata"] == {
        "billing_gql_checkout_id": checkout["id"],
        "billing_gql_customer_id": cid,
    }
    assert sent["idempotency_key"] == f"billing-gql-checkout-{checkout['id']}"
    accounts = await db_rows(
        env.db_url,
        "SELECT provider_customer_id FROM customer_provider_accounts WHERE customer_id = $1::uuid",
        cid,
    )
    assert accounts == [{"provider_customer_id": f"fcus_{cid[:8]}"}]


async def test_provider_choice_errors(env: Env) -> None:
    await make_plan(env.api)  # no fakepay reference
    cid = await make_customer(env.api)
    missing = await create_checkout(env.api, customerId=cid, planCode="pro", provider="fakepay")
    assert [(e["field"], e["code"]) for e in missing["userErrors"]] == [
        (["input", "planCode"], "PROVIDER_REF_MISSING")
    ]
    # fakebank sells VND only.
    currency = await create_checkout(
        env.api, customerId=cid, planCode="pro", provider="fakebank", currency="USD"
    )
    assert [e["code"] for e in currency["userErrors"]] == ["UNSUPPORTED_CURRENCY"]
    # Without a route, no provider is chosen even though fakebank could sell VND.
    none = await create_checkout(env.api, customerId=cid, planCode="pro", currency="VND")
    assert [e["code"] for e in none["userErrors"]] == ["NO_PROVIDER"]


@pytest.mark.parametrize(
    ("status", "code"), [(500, "PROVIDER_UNAVAILABLE"), (402, "PROVIDER_ERROR")]
)
async def test_provider_failure_fails_the_checkout_only(env: Env, status: int, code: str) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    env.fake.fail_with = status
    payload = await create_checkout(env.api, customerId=cid, planCode="pro", provider="fakepay")
    assert [e["code"] for e in payload["userErrors"]] == [code]
    assert payload["checkout"]["status"] == "FAILED"
    assert payload["checkout"]["url"] is None
    error = payload["checkout"]["error"]
    assert error and "sk_fake" not in error and "whsec" not in error
    if status == 402:
        assert error == "card_declined: no funds"
    subs = await db_rows(env.db_url, "SELECT id FROM subscriptions")
    assert subs == []


async def test_a_replayed_failed_checkout_names_the_field_the_provider_refused(
    env: Env,
) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    env.fake.fail_with, env.fake.fail_field = 422, ["successUrl"]
    request = {"customerId": cid, "planCode": "pro", "provider": "fakepay", "idempotencyKey": "k"}
    first = await create_checkout(env.api, **request)
    assert first["checkout"]["status"] == "FAILED"
    refusal = [(["input", "successUrl"], "PROVIDER_ERROR", "card_declined: no funds")]
    assert [(e["field"], e["code"], e["message"]) for e in first["userErrors"]] == refusal
    # The same key again: the same checkout, and the same error at the same field.
    env.fake.fail_with = env.fake.fail_field = None
    again = await create_checkout(env.api, **request)
    assert again["checkout"]["id"] == first["checkout"]["id"]
    assert again["checkout"]["status"] == "FAILED"
    assert [(e["field"], e["code"], e["message"]) for e in again["userErrors"]] == refusal


async def test_checkout_completed_webhook_creates_the_subscription(env: Env) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    checkout = await pay_checkout(env, cid)
    delivery = pay_event(
        "checkout.completed",
        "2027-01-31T12:05:00+00:00",
        "evt_1",
        checkout_id=checkout["id"],
        provider_checkout_id="fcs_1",
        customer="fcus_1",
        payment={"id": "ch_1", "amount": 3000, "currency": "USD"},
        subscription=snapshot(checkout["id"]),
    )
    assert await post(env, delivery) == {"ok": True}
    # Readable as soon as the 2xx is back.
    data = (await env.api.gql(CHECKOUT, {"id": checkout["id"]}, admin=True)).ok()
    done = data["checkout"]
    assert done["status"] == "COMPLETED"
    assert done["amountPaid"] == {"amount": "30.00", "currency": "USD"}
    sub = done["subscription"]
    assert sub["providerSubscriptionId"] == "fsub_1" and sub["status"] == "ACTIVE"
    assert iso(sub["currentPeriodEnd"]) == datetime(2027, 2, 28, 12, tzinfo=UTC)
    # The same delivery again: 2xx, nothing changes.
    assert await post(env, delivery) == {"ok": True}
    payments = await db_rows(env.db_url, "SELECT provider_ref, amount_minor FROM payments")
    assert payments == [{"provider_ref": "ch_1", "amount_minor": 3000}]
    assert len(await db_rows(env.db_url, "SELECT id FROM subscriptions")) == 1
    deliveries = await db_rows(env.db_url, "SELECT status, attempts FROM webhook_deliveries")
    assert deliveries == [{"status": "applied", "attempts": 1}]


async def test_bad_signature_is_refused_and_not_stored(env: Env) -> None:
    body, headers = pay_event("checkout.completed", "2027-01-31T12:05:00+00:00")
    response = await env.api.post_webhook("fakepay", body, {**headers, "x-fake-signature": "00"})
    assert response.status_code == 401
    assert await db_rows(env.db_url, "SELECT id FROM webhook_deliveries") == []
    unknown = await env.api.post_webhook("nope", body, headers)
    assert unknown.status_code == 404


async def test_twenty_concurrent_completion_deliveries_make_one_subscription(env: Env) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    checkout = await pay_checkout(env, cid)
    rt = await worker(env)
    try:
        provider = rt.providers.get_configured("fakepay")
        assert provider is not None
        ids = []
        for i in range(20):
            body, headers = pay_event(
                "checkout.completed",
                "2027-01-31T12:05:00+00:00",
                f"evt_{i}",
                **env.fake.paid(checkout["id"]),
                payment={"id": "ch_1", "amount": 3000, "currency": "USD"},
            )
            request = WebhookRequest(headers, body, datetime.now(UTC))
            stored = await store_delivery(
                rt.db, "fakepay", provider.verify_webhook(request), body, T0, due_at=T0
            )
            ids.append(stored.id)
        # Twenty deliveries of one completion, applied at once (as by several replicas).
        statuses = await asyncio.gather(*[apply_delivery(rt, i) for i in ids])
    finally:
        await rt.close()
    assert set(statuses) == {"applied"}
    subs = await db_rows(env.db_url, "SELECT origin_checkout_id::text AS o FROM subscriptions")
    assert subs == [{"o": checkout["id"]}]
    assert len(await db_rows(env.db_url, "SELECT id FROM payments")) == 1
    paid = await db_rows(env.db_url, "SELECT amount_paid_minor FROM checkouts")
    assert paid == [{"amount_paid_minor": 3000}]


async def test_snapshots_never_regress(env: Env) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    checkout = await pay_checkout(env, cid)
    # The subscription snapshot arrives before the checkout completion.
    await post(
        env,
        pay_event(
            "subscription.updated",
            "2027-01-31T12:05:00+00:00",
            subscription=snapshot(checkout["id"]),
        ),
    )
    newer = snapshot(checkout["id"], status="PAST_DUE")
    await post(
        env, pay_event("subscription.updated", "2027-02-01T00:00:00+00:00", subscription=newer)
    )
    older = snapshot(checkout["id"], status="CANCELED", canceled_at="2027-01-31T13:00:00+00:00")
    await post(
        env, pay_event("subscription.updated", "2027-01-31T13:00:00+00:00", subscription=older)
    )
    await post(
        env,
        pay_event(
            "checkout.completed", "2027-01-31T12:06:00+00:00", **env.fake.paid(checkout["id"])
        ),
    )
    subs = await db_rows(
        env.db_url,
        "SELECT id::text, status, provider_subscription_id, "
        "origin_checkout_id::text AS origin FROM subscriptions",
    )
    assert len(subs) == 1
    assert subs[0]["status"] == "PAST_DUE"
    assert subs[0]["origin"] == checkout["id"]
    data = (await env.api.gql(CHECKOUT, {"id": checkout["id"]}, admin=True)).ok()
    assert data["checkout"]["status"] == "COMPLETED"
    assert data["checkout"]["subscription"]["id"] == subs[0]["id"]
    # PAST_DUE still grants; a payment recovers it.
    assert (await entitlement(env.api, cid, "seats"))["enabled"] is True


async def test_a_completion_carrying_an_older_snapshot_does_not_regress(env: Env) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    checkout = await pay_checkout(env, cid)
    # The subscription's own (newer) delivery comes first: it is already canceled.
    canceled = snapshot(checkout["id"], status="CANCELED", canceled_at="2027-01-31T13:00:00+00:00")
    await post(
        env, pay_event("subscription.updated", "2027-01-31T13:00:00+00:00", subscription=canceled)
    )
    # Then the checkout completion, carrying the state it had when the buyer paid.
    await post(
        env,
        pay_event(
            "checkout.completed",
            "2027-01-31T12:05:00+00:00",
            **env.fake.paid(checkout["id"]),
            payment={"id": "ch_1", "amount": 3000, "currency": "USD"},
            subscription=snapshot(checkout["id"]),
        ),
    )
    data = (await env.api.gql(CHECKOUT, {"id": checkout["id"]}, admin=True)).ok()
    assert data["checkout"]["status"] == "COMPLETED"
    assert data["checkout"]["subscription"]["status"] == "CANCELED"
    subs = await db_rows(env.db_url, "SELECT status, provider_updated_at FROM subscriptions")
    assert subs == [
        {"status": "CANCELED", "provider_updated_at": datetime(2027, 1, 31, 13, tzinfo=UTC)}
    ]
    assert (await entitlement(env.api, cid, "seats"))["enabled"] is False


async def test_payment_failed_makes_past_due_and_payment_recovers(env: Env) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    checkout = await pay_checkout(env, cid)
    await post(
        env,
        pay_event(
            "checkout.completed",
            "2027-01-31T12:05:00+00:00",
            **env.fake.paid(checkout["id"]),
            subscription=snapshot(checkout["id"]),
        ),
    )
    await post(
        env,
        pay_event(
            "payment.failed",
            "2027-02-28T12:00:00+00:00",
            payment={"id": "inv_2", "amount": 3000, "currency": "USD", "subscription": "fsub_1"},
        ),
    )
    sub = (await db_rows(env.db_url, "SELECT id::text, status FROM subscriptions"))[0]
    assert sub["status"] == "PAST_DUE"
    await post(
        env,
        pay_event(
            "payment.succeeded",
            "2027-03-01T12:00:00+00:00",
            payment={"id": "inv_2b", "amount": 3000, "currency": "USD", "subscription": "fsub_1"},
        ),
    )
    data = (await env.api.gql(SUBSCRIPTION, {"id": sub["id"]}, admin=True)).ok()
    assert data["subscription"]["status"] == "ACTIVE"
    payments = await db_rows(
        env.db_url,
        "SELECT provider_ref, status, subscription_id::text AS s"
        " FROM payments ORDER BY provider_ref",
    )
    assert payments == [
        {"provider_ref": "inv_2", "status": "failed", "s": sub["id"]},
        {"provider_ref": "inv_2b", "status": "succeeded", "s": sub["id"]},
    ]


async def test_failed_apply_is_kept_and_retried(env: Env) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    checkout = await pay_checkout(env, cid)
    # A completion for a checkout the provider knows but we do not (yet): kept as failed.
    boom = pay_event("boom", "2027-01-31T12:05:00+00:00", "evt_boom")
    assert await post(env, boom) == {"ok": True}
    early = pay_event(
        "checkout.completed",
        "2027-01-31T12:05:00+00:00",
        "evt_early",
        provider_checkout_id="fcs_missing",
        amount_total=3000,
        currency="USD",
    )
    assert await post(env, early) == {"ok": True}
    rows = await db_rows(
        env.db_url,
        "SELECT event_id, status, attempts, error, next_attempt_at "
        "FROM webhook_deliveries ORDER BY event_id",
    )
    assert [(r["event_id"], r["status"], r["attempts"]) for r in rows] == [
        ("evt_boom", "failed", 1),
        ("evt_early", "failed", 1),
    ]
    assert "RuntimeError" in rows[0]["error"] and "sk_fake" not in rows[0]["error"]
    assert "fcs_missing" in rows[1]["error"]
    assert all(r["next_attempt_at"] > T0 for r in rows)
    # The checkout gets that provider id; the worker's sweep applies what is due.
    conn_rows = await db_rows(
        env.db_url,
        "UPDATE checkouts SET provider_checkout_id = "
        "'fcs_missing' WHERE id = $1::uuid RETURNING id",
        checkout["id"],
    )
    assert conn_rows
    rt = await worker(env)
    try:
        assert await apply_due_deliveries(rt, T0) == 0  # not due yet
        later = max(r["next_attempt_at"] for r in rows)
        assert await apply_due_deliveries(rt, later) == 1
    finally:
        await rt.close()
    rows = await db_rows(
        env.db_url, "SELECT event_id, status, attempts FROM webhook_deliveries ORDER BY event_id"
    )
    assert [(r["event_id"], r["status"], r["attempts"]) for r in rows] == [
        ("evt_boom", "failed", 2),
        ("evt_early", "applied", 2),
    ]
    data = (await env.api.gql(CHECKOUT, {"id": checkout["id"]}, admin=True)).ok()
    assert data["checkout"]["status"] == "COMPLETED"


async def test_grants_map_to_features(env: Env) -> None:
    cid = await make_customer(env.api, "grantee")
    grant = {
        "id": "g1",
        "benefit": "b1",
        "granted": True,
        "customer_id": cid,
        "metadata": {"bundle": "team"},
    }
    await post(env, pay_event("grant.updated", "2027-01-31T12:00:00+00:00", grant=grant))
    other = {
        "id": "g2",
        "benefit": "b2",
        "granted": True,
        "customer_id": cid,
        "metadata": {"feature": "seats", "limit": 3},
    }
    await post(env, pay_event("grant.updated", "2027-01-31T12:00:00+00:00", grant=other))
    assert await entitlement(env.api, cid, "seats") == {
        "feature": "seats",
        "enabled": True,
        "limit": "13",
        "used": "0",
        "remaining": "13",
    }
    assert (await entitlement(env.api, cid, "sso"))["limit"] is None
    # An older revocation is ignored; a newer one removes the grant.
    revoked = {**grant, "granted": False}
    await post(env, pay_event("grant.updated", "2027-01-30T12:00:00+00:00", grant=revoked))
    assert (await entitlement(env.api, cid, "seats"))["limit"] == "13"
    await post(env, pay_event("grant.updated", "2027-02-01T12:00:00+00:00", grant=revoked))
    assert (await entitlement(env.api, cid, "seats"))["limit"] == "3"
    assert (await entitlement(env.api, cid, "sso"))["enabled"] is False


async def test_refund_ends_a_one_time_purchase(env: Env) -> None:
    await make_plan(
        env.api,
        "lifetime",
        interval="ONE_TIME",
        features=[{"feature": "export"}],
        providerRefs=[{"provider": "fakepay", "ref": "price_life"}],
    )
    cid = await make_customer(env.api)
    checkout = await checkout_ok(env.api, customerId=cid, planCode="lifetime", provider="fakepay")
    await post(
        env,
        pay_event(
            "checkout.completed",
            "2027-01-31T12:05:00+00:00",
            **env.fake.paid(checkout["id"]),
            payment={"id": "ch_9", "amount": 3000, "currency": "USD"},
        ),
    )
    assert (await entitlement(env.api, cid, "export"))["enabled"] is True
    await post(
        env,
        pay_event(
            "refund.succeeded",
            "2027-02-01T00:00:00+00:00",
            refund={"payment": "ch_9", "amount": 1000, "currency": "USD"},
        ),
    )
    assert (await entitlement(env.api, cid, "export"))["enabled"] is True
    statuses = await db_rows(env.db_url, "SELECT status, refunded_minor FROM payments")
    assert statuses == [{"status": "partially_refunded", "refunded_minor": 1000}]
    await post(
        env,
        pay_event(
            "refund.succeeded",
            "2027-02-02T00:00:00+00:00",
            refund={"payment": "ch_9", "amount": 3000, "currency": "USD"},
        ),
    )
    assert (await entitlement(env.api, cid, "export"))["enabled"] is False
    # A late, smaller total changes nothing.
    await post(
        env,
        pay_event(
            "refund.succeeded",
            "2027-02-01T12:00:00+00:00",
            refund={"payment": "ch_9", "amount": 2000, "currency": "USD"},
        ),
    )
    statuses = await db_rows(env.db_url, "SELECT status, refunded_minor FROM payments")
    assert statuses == [{"status": "refunded", "refunded_minor": 3000}]


async def test_bank_transfers_are_matched_by_reference(env: Env) -> None:
    await make_plan(env.api)
    cid = await make_customer(env.api, currency="VND")
    FakeBank.references[:] = ["FBTAKEN1", "FBTAKEN1", "FBFRESH2"]
    first = await checkout_ok(env.api, customerId=cid, planCode="pro", provider="fakebank")
    second = await checkout_ok(env.api, customerId=cid, planCode="pro", provider="fakebank")
    # The second asked again after a collision.
    assert first["bankTransfer"]["reference"] == "FBTAKEN1"
    assert second["bankTransfer"]["reference"] == "FBFRESH2"
    assert iso(first["expiresAt"]) == datetime(2027, 2, 1, 12, tzinfo=UTC)  # a day
    assert first["bankTransfer"]["amount"] == {"amount": "300000", "currency": "VND"}

    at = "2027-01-31T13:00:00+00:00"
    ack = await post(env, bank_transfer(1, 100000, "fbtaken1", at), "fakebank")
    assert ack == {"ok": True, "success": True}
    partial = (await env.api.gql(CHECKOUT, {"id": first["id"]}, admin=True)).ok()["checkout"]
    assert partial["status"] == "OPEN"
    assert partial["amountPaid"] == {"amount": "100000", "currency": "VND"}
    assert partial["bankTransfer"]["amount"] == {"amount": "200000", "currency": "VND"}
    assert "amount=200000" in partial["bankTransfer"]["qrCodeUrl"]
    # The same transfer again (a retry of the webhook) counts once.
    await post(env, bank_transfer(1, 100000, "fbtaken1", at), "fakebank")
    await post(env, bank_transfer(2, 250000, "FBTAKEN1", at), "fakebank")
    done = (await env.api.gql(CHECKOUT, {"id": first["id"]}, admin=True)).ok()["checkout"]
    assert done["status"] == "COMPLETED"
    assert done["amountPaid"] == {"amount": "350000", "currency": "VND"}  # overpaid
    assert done["subscription"]["status"] == "ACTIVE"
    assert done["subscription"]["provider"] == "fakebank"
    # Money matching nothing is kept unmatched.
    await post(env, bank_transfer(3, 5000, "NOPE", at), "fakebank")
    await post(env, bank_transfer(4, 5000, None, at), "fakebank")
    unmatched = await db_rows(
        env.db_url,
        "SELECT provider_ref FROM payments WHERE status = 'unmatched' ORDER BY provider_ref",
    )
    assert unmatched == [{"provider_ref": "txn-3"}, {"provider_ref": "txn-4"}]


async def test_a_transfer_for_an_expired_checkout_still_completes_it(env: Env) -> None:
    await make_plan(env.api)
    cid = await make_customer(env.api, currency="VND")
    checkout = await checkout_ok(env.api, customerId=cid, planCode="pro", provider="fakebank")
    await db_rows(
        env.db_url, "UPDATE checkouts SET status = 'EXPIRED' WHERE id = $1::uuid", checkout["id"]
    )
    reference = checkout["bankTransfer"]["reference"]
    await post(env, bank_transfer(7, 300000, reference, "2027-02-03T00:00:00+00:00"), "fakebank")
    done = (await env.api.gql(CHECKOUT, {"id": checkout["id"]}, admin=True)).ok()["checkout"]
    assert done["status"] == "COMPLETED" and done["subscription"]["status"] == "ACTIVE"


UNMATCHED = """query($p: String, $first: Int, $after: String) {
  unmatchedPayments(provider: $p, first: $first, after: $after) {
    edges { cursor node { id provider providerRef status amount { amount currency }
                          checkout { id } customer { id } receivedAt } }
    pageInfo { hasNextPage endCursor } } }"""

ASSIGN = """mutation($p: ID!, $c: ID!) { assignPayment(paymentId: $p, checkoutId: $c) {
  checkout { id status amountPaid { amount currency } subscription { status } }
  userErrors { field code message } } }"""

DELIVERIES = """query($status: String, $first: Int, $after: String) {
  webhookDeliveries(provider: "fakepay", status: $status, first: $first, after: $after) {
    edges { cursor node { id provider eventId eventType status attempts error receivedAt
                          appliedAt } }
    pageInfo { hasNextPage hasPreviousPage endCursor } } }"""

REPLAY = """mutation($id: ID!) { replayWebhookDelivery(id: $id) {
  delivery { id status attempts error } userErrors { field code } } }"""


async def test_unmatched_payments_can_be_assigned(env: Env) -> None:
    api = env.api
    await make_plan(api)
    cid = await make_customer(api, currency="VND")
    checkout = await checkout_ok(api, customerId=cid, planCode="pro", provider="fakebank")
    at = "2027-01-31T13:00:00+00:00"
    await post(env, bank_transfer(11, 300000, "typo-ref", at), "fakebank")
    await post(env, bank_transfer(12, 1000, None, at), "fakebank")
    listed = (await api.gql(UNMATCHED, {"p": "fakebank", "first": 1}, admin=True)).ok()
    page = listed["unmatchedPayments"]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = (
        await api.gql(
            UNMATCHED, {"p": "fakebank", "after": page["pageInfo"]["endCursor"]}, admin=True
        )
    ).ok()["unmatchedPayments"]
    nodes = [e["node"] for e in page["edges"] + rest["edges"]]
    assert sorted(n["providerRef"] for n in nodes) == ["txn-11", "txn-12"]
    assert all(n["status"] == "unmatched" and n["checkout"] is None for n in nodes)
    assert rest["pageInfo"]["hasNextPage"] is False
    payment = next(n for n in nodes if n["providerRef"] == "txn-11")

    assigned = (await api.gql(ASSIGN, {"p": payment["id"], "c": checkout["id"]}, admin=True)).ok()[
        "assignPayment"
    ]["checkout"]
    assert assigned["status"] == "COMPLETED"
    assert assigned["amountPaid"] == {"amount": "300000", "currency": "VND"}
    assert assigned["subscription"]["status"] == "ACTIVE"
    again = await api.gql(ASSIGN, {"p": payment["id"], "c": checkout["id"]}, admin=True)
    assert [(e["field"], e["code"]) for e in again.data["assignPayment"]["userErrors"]] == [
        (["paymentId"], "INVALID_STATE")
    ]
    missing = await api.gql(ASSIGN, {"p": "x", "c": checkout["id"]}, admin=True)
    assert [e["code"] for e in missing.data["assignPayment"]["userErrors"]] == ["NOT_FOUND"]
    remaining = (await api.gql(UNMATCHED, {"p": "fakebank"}, admin=True)).ok()
    assert [e["node"]["providerRef"] for e in remaining["unmatchedPayments"]["edges"]] == ["txn-12"]
    paid = await api.admin(
        "query($c: ID) { payments(customerId: $c) { nodes { providerRef "
        "status checkout { id } } } }",
        {"c": cid},
    )
    assert paid["payments"]["nodes"] == [
        {"providerRef": "txn-11", "status": "succeeded", "checkout": {"id": checkout["id"]}}
    ]


async def test_deliveries_are_listed_and_replayed(env: Env) -> None:
    api = env.api
    await make_plan(api, providerRefs=REFS)
    cid = await make_customer(api)
    checkout = await pay_checkout(env, cid)
    await post(env, pay_event("ignored", "2027-01-31T12:00:00+00:00", "evt_a"))
    await post(
        env,
        pay_event(
            "checkout.completed",
            "2027-01-31T12:05:00+00:00",
            "evt_b",
            provider_checkout_id="fcs_unknown",
        ),
    )
    await post(
        env,
        pay_event(
            "checkout.completed",
            "2027-01-31T12:06:00+00:00",
            "evt_c",
            **env.fake.paid(checkout["id"]),
        ),
    )
    first = (await api.gql(DELIVERIES, {"first": 2}, admin=True)).ok()["webhookDeliveries"]
    assert first["pageInfo"]["hasNextPage"] is True
    second = (
        await api.gql(DELIVERIES, {"first": 2, "after": first["pageInfo"]["endCursor"]}, admin=True)
    ).ok()["webhookDeliveries"]
    assert second["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "endCursor": second["edges"][-1]["cursor"],
    }
    nodes = {e["node"]["eventId"]: e["node"] for e in first["edges"] + second["edges"]}
    assert {k: v["status"] for k, v in nodes.items()} == {
        "evt_a": "ignored",
        "evt_b": "failed",
        "evt_c": "applied",
    }
    assert "fcs_unknown" in nodes["evt_b"]["error"] and nodes["evt_b"]["attempts"] == 1
    assert nodes["evt_c"]["appliedAt"] is not None
    failed = (await api.gql(DELIVERIES, {"status": "failed"}, admin=True)).ok()
    assert [e["node"]["eventId"] for e in failed["webhookDeliveries"]["edges"]] == ["evt_b"]

    # Replaying an applied one is a no-op; a failed one is tried again.
    applied = (await api.admin(REPLAY, {"id": nodes["evt_c"]["id"]}))["replayWebhookDelivery"]
    assert applied["delivery"] == {
        "id": nodes["evt_c"]["id"],
        "status": "applied",
        "attempts": 1,
        "error": None,
    }
    retried = (await api.admin(REPLAY, {"id": nodes["evt_b"]["id"]}))["replayWebhookDelivery"]
    assert retried["delivery"]["status"] == "failed" and retried["delivery"]["attempts"] == 2
    await db_rows(env.db_url, "UPDATE checkouts SET provider_checkout_id = 'fcs_unknown'")
    fixed = (await api.admin(REPLAY, {"id": nodes["evt_b"]["id"]}))["replayWebhookDelivery"]
    assert fixed["delivery"]["status"] == "applied" and fixed["delivery"]["error"] is None
    unknown = await api.gql(REPLAY, {"id": "00000000-0000-0000-0000-000000000000"}, admin=True)
    assert [e["code"] for e in unknown.data["replayWebhookDelivery"]["userErrors"]] == ["NOT_FOUND"]


# -- a completion is bound to the session we created, and must pay what the checkout asks ------

UNMATCHED_NODES = """query { unmatchedPayments { nodes {
  id providerRef status unmatchedReason amount { amount currency }
  checkout { id } claimedCheckout { id } customer { id } } } }"""
ENDPOINT = """mutation($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { userErrors { code } } }"""


async def unmatched_payments(env: Env) -> list[dict[str, Any]]:
    return (await env.api.gql(UNMATCHED_NODES, admin=True)).ok()["unmatchedPayments"]["nodes"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("session", "paid", "reason"),
    [
        # A session of the buyer's own (a cheap Payment Link with our id attached).
        ("fcs_theirs", {"amount_total": 3000, "currency": "USD"}, "PROVIDER_CHECKOUT_MISMATCH"),
        ("fcs_theirs", {"amount_total": 1, "currency": "USD"}, "PROVIDER_CHECKOUT_MISMATCH"),
        # Our session, but less than the checkout's amount, or another currency.
        (None, {"amount_total": 1, "currency": "USD"}, "AMOUNT_TOO_LOW"),
        (None, {"amount_total": 50, "currency": "JPY"}, "CURRENCY_MISMATCH"),
        (None, {"amount_total": 0, "currency": "USD"}, "AMOUNT_TOO_LOW"),
        (None, {}, "AMOUNT_MISSING"),
    ],
)
async def test_a_completion_that_does_not_match_its_checkout_completes_nothing(
    env: Env, session: str | None, paid: dict[str, Any], reason: str
) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    checkout = await pay_checkout(env, cid)
    await env.api.admin(
        ENDPOINT, {"input": {"url": "https://app.example/hooks", "events": ["payment.*"]}}
    )
    ours = env.fake.session_of(checkout["id"])
    forged = pay_event(
        "checkout.completed",
        "2027-01-31T12:05:00+00:00",
        "evt_forged",
        checkout_id=checkout["id"],
        provider_checkout_id=session or ours,
        customer="fcus_attacker",
        subscription=snapshot(checkout["id"], id="fsub_theirs"),
        **paid,
    )
    assert await post(env, forged) == {"ok": True}
    data = (await env.api.gql(CHECKOUT, {"id": checkout["id"]}, admin=True)).ok()
    assert data["checkout"]["status"] == "OPEN"
    assert data["checkout"]["subscription"] is None
    assert data["checkout"]["amountPaid"] == {"amount": "0.00", "currency": "USD"}
    assert await db_rows(env.db_url, "SELECT id FROM subscriptions") == []
    assert (await entitlement(env.api, cid, "seats"))["enabled"] is False
    # Nothing learnt from it: the buyer's provider customer is not tied to ours.
    learnt = "SELECT 1 FROM customer_provider_accounts WHERE provider_customer_id = 'fcus_attacker'"
    assert await db_rows(env.db_url, learnt) == []
    # The money is kept for an operator, unmatched, saying why and which checkout it named.
    [kept] = await unmatched_payments(env)
    assert kept["providerRef"] == (session or ours)
    assert kept["status"] == "unmatched" and kept["unmatchedReason"] == reason
    assert kept["claimedCheckout"] == {"id": checkout["id"]}
    assert kept["checkout"] is None and kept["customer"] is None
    [message] = await db_rows(env.db_url, "SELECT event_type, body FROM webhook_messages")
    assert message["event_type"] == "payment.unmatched"
    body = json.loads(message["body"])["data"]
    assert body["reason"] == reason and body["claimed_checkout_id"] == checkout["id"]
    # The genuine completion still completes it.
    await post(
        env,
        pay_event(
            "checkout.completed", "2027-01-31T12:06:00+00:00", **env.fake.paid(checkout["id"])
        ),
    )
    data = (await env.api.gql(CHECKOUT, {"id": checkout["id"]}, admin=True)).ok()
    assert data["checkout"]["status"] == "COMPLETED"


async def test_an_unmatched_completion_can_be_assigned_by_an_operator(env: Env) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    checkout = await pay_checkout(env, cid)
    other = pay_event(
        "checkout.completed",
        "2027-01-31T12:05:00+00:00",
        checkout_id=checkout["id"],
        provider_checkout_id="fcs_other",
        payment={"id": "ch_other", "amount": 3000, "currency": "USD"},
    )
    await post(env, other)
    [kept] = await unmatched_payments(env)
    assert (kept["providerRef"], kept["unmatchedReason"]) == (
        "ch_other",
        "PROVIDER_CHECKOUT_MISMATCH",
    )
    assigned = (await env.api.gql(ASSIGN, {"p": kept["id"], "c": checkout["id"]}, admin=True)).ok()[
        "assignPayment"
    ]
    assert assigned["userErrors"] == []
    assert assigned["checkout"]["status"] == "COMPLETED"
    assert assigned["checkout"]["amountPaid"] == {"amount": "30.00", "currency": "USD"}
    assert await unmatched_payments(env) == []


async def test_a_trial_completes_with_nothing_paid_but_a_paid_checkout_does_not(env: Env) -> None:
    await make_plan(env.api, "trial", trialDays=14, providerRefs=REFS)
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    trial = await checkout_ok(env.api, customerId=cid, planCode="trial", provider="fakepay")
    free = env.fake.paid(trial["id"], amount=0)
    await post(env, pay_event("checkout.completed", "2027-01-31T12:05:00+00:00", **free))
    data = (await env.api.gql(CHECKOUT, {"id": trial["id"]}, admin=True)).ok()
    assert data["checkout"]["status"] == "COMPLETED"
    assert data["checkout"]["subscription"]["status"] == "TRIALING"
    paid = await pay_checkout(env, await make_customer(env.api, "usr_2"))
    free = env.fake.paid(paid["id"], amount=0)
    await post(env, pay_event("checkout.completed", "2027-01-31T12:05:00+00:00", **free))
    data = (await env.api.gql(CHECKOUT, {"id": paid["id"]}, admin=True)).ok()
    assert data["checkout"]["status"] == "OPEN"


async def test_an_expiry_of_another_session_leaves_the_checkout_open(env: Env) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    checkout = await pay_checkout(env, cid)
    theirs = pay_event(
        "checkout.expired",
        "2027-01-31T12:05:00+00:00",
        checkout_id=checkout["id"],
        provider_checkout_id="fcs_theirs",
    )
    await post(env, theirs)
    data = (await env.api.gql(CHECKOUT, {"id": checkout["id"]}, admin=True)).ok()
    assert data["checkout"]["status"] == "OPEN"
    ours = pay_event(
        "checkout.expired",
        "2027-01-31T12:06:00+00:00",
        checkout_id=checkout["id"],
        provider_checkout_id=env.fake.session_of(checkout["id"]),
    )
    await post(env, ours)
    data = (await env.api.gql(CHECKOUT, {"id": checkout["id"]}, admin=True)).ok()
    assert data["checkout"]["status"] == "EXPIRED"


async def test_a_payment_of_another_session_does_not_pay_the_checkout(env: Env) -> None:
    await make_plan(env.api, providerRefs=REFS)
    cid = await make_customer(env.api)
    checkout = await pay_checkout(env, cid)
    payment = {
        "id": "ch_theirs",
        "amount": 3000,
        "currency": "USD",
        "checkout_id": checkout["id"],
    }
    theirs = pay_event(
        "payment.succeeded",
        "2027-01-31T12:05:00+00:00",
        provider_checkout_id="fcs_theirs",
        payment=payment,
    )
    await post(env, theirs)
    data = (await env.api.gql(CHECKOUT, {"id": checkout["id"]}, admin=True)).ok()
    assert data["checkout"]["status"] == "OPEN"
    assert data["checkout"]["amountPaid"] == {"amount": "0.00", "currency": "USD"}
