"""The provider against the fake Stripe: forms, headers, idempotency, retries, errors."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from stripe_helpers import CUSTOMER, checkout_request, plan_info

from billing_gql import (
    BillingInterval,
    NotSupported,
    PlanChangeRequest,
    PortalRequest,
    ProrationBehavior,
    ProviderError,
    ProviderUnavailable,
    ReconcileRequest,
    SubscriptionRef,
    SubscriptionStatus,
    UsageRecord,
    UserInputError,
)
from billing_gql_stripe.api import STRIPE_VERSION
from billing_gql_stripe.plugin import StripeProvider
from billing_gql_stripe.testing import FakeStripe


def posts(fake: FakeStripe, path: str) -> list[dict[str, object]]:
    return [r.params for r in fake.requests if r.method == "POST" and r.path == path]


async def test_checkout_session_form_and_headers(fake: FakeStripe, stripe: StripeProvider) -> None:
    price = fake.create_price(unit_amount=2900)
    request = checkout_request(
        price,
        plan=plan_info(price, trial_days=14),
        quantity=3,
        metadata={"source": "pricing-page"},
    )
    session = await stripe.create_checkout(request)

    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/checkout/sessions")
    assert sent.headers["authorization"] == f"Bearer {fake.api_key}"
    assert sent.headers["stripe-version"] == STRIPE_VERSION
    assert sent.headers["idempotency-key"] == request.idempotency_key
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    body = sent.body.decode()
    # stripe-python leaves the brackets unescaped on the wire.
    assert "line_items[0][price]=" + price in body
    assert "cancel_url" in body and "customer=" not in body
    ids = {
        "billing_gql_checkout_id": request.checkout_id,
        "billing_gql_customer_id": CUSTOMER.id,
        "source": "pricing-page",
    }
    assert sent.params == {
        "mode": "subscription",
        "line_items": [{"price": price, "quantity": "3"}],
        "success_url": "https://app.example/ok",
        "cancel_url": "https://app.example/no",
        "client_reference_id": request.checkout_id,
        "metadata": ids,
        "expires_at": str(int(request.expires_at.timestamp())),
        "customer_email": "ann@example.com",
        "subscription_data": {"metadata": ids, "trial_period_days": "14"},
    }
    stored = fake.sessions[session.provider_checkout_id or ""]
    assert session.url == stored["url"] and session.url.startswith("https://checkout.stripe.com/")
    assert stored["amount_total"] == 8700


async def test_one_time_plans_use_payment_mode_and_known_customers(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    price = fake.create_price(unit_amount=5000, interval=None)
    customer_id = fake.create_customer(email="ann@example.com")
    request = checkout_request(
        price,
        plan=plan_info(price, interval=BillingInterval.ONE_TIME),
        customer=replace(CUSTOMER, provider_customer_id=customer_id),
        cancel_url=None,
    )
    await stripe.create_checkout(request)
    params = fake.requests[-1].params
    assert params["mode"] == "payment"
    assert params["customer"] == customer_id
    assert "customer_email" not in params and "subscription_data" not in params
    assert "cancel_url" not in params
    assert params["payment_intent_data"] == {"metadata": params["metadata"]}


async def test_one_time_without_stripe_customer_asks_stripe_to_create_one(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    price = fake.create_price(unit_amount=5000, interval=None)
    request = checkout_request(price, plan=plan_info(price, interval=BillingInterval.ONE_TIME))
    await stripe.create_checkout(request)
    assert fake.requests[-1].params["customer_creation"] == "always"


async def test_expiry_outside_stripes_window_is_left_to_stripe(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    price = fake.create_price(unit_amount=2900)
    for expires in (timedelta(minutes=10), timedelta(days=3)):
        request = checkout_request(
            price,
            checkout_id=f"c-{expires.total_seconds()}",
            expires_at=datetime.now(UTC) + expires,
        )
        await stripe.create_checkout(request)
        assert "expires_at" not in fake.requests[-1].params


async def test_retried_create_makes_one_session(fake: FakeStripe, stripe: StripeProvider) -> None:
    price = fake.create_price(unit_amount=2900)
    request = checkout_request(price)
    first = await stripe.create_checkout(request)
    again = await stripe.create_checkout(request)
    assert first == again
    assert len(fake.sessions) == 1


async def test_reusing_a_key_with_other_parameters_is_stripes_idempotency_error(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    price = fake.create_price(unit_amount=2900)
    await stripe.create_checkout(checkout_request(price))
    with pytest.raises(ProviderError) as info:
        await stripe.create_checkout(checkout_request(price, quantity=2))
    assert info.value.code == "PROVIDER_ERROR"
    assert info.value.provider_code == "idempotency_error"
    assert "same parameters" in info.value.message
    assert len(fake.sessions) == 1


async def test_429_is_retried_honouring_retry_after(
    fake: FakeStripe, stripe: StripeProvider, sleeps: list[float]
) -> None:
    price = fake.create_price(unit_amount=2900)
    fake.fail_next(2, status=429, retry_after="7")
    session = await stripe.create_checkout(checkout_request(price))
    assert sleeps == [7.0, 7.0]
    assert list(fake.sessions) == [session.provider_checkout_id]
    # Each attempt carried the same idempotency key.
    keys = {r.headers["idempotency-key"] for r in fake.requests}
    assert len(keys) == 1


async def test_5xx_on_a_post_is_retried_because_it_has_an_idempotency_key(
    fake: FakeStripe, stripe: StripeProvider, sleeps: list[float]
) -> None:
    price = fake.create_price(unit_amount=2900)
    fake.fail_next(1, status=503)
    await stripe.create_checkout(checkout_request(price))
    assert len(sleeps) == 1 and len(fake.sessions) == 1


async def test_persistent_5xx_becomes_provider_unavailable(
    fake: FakeStripe, stripe: StripeProvider, sleeps: list[float]
) -> None:
    price = fake.create_price(unit_amount=2900)
    fake.fail_next(10, status=500)
    with pytest.raises(ProviderUnavailable) as info:
        await stripe.create_checkout(checkout_request(price))
    assert info.value.code == "PROVIDER_UNAVAILABLE" and info.value.status == 500
    assert len(sleeps) == 3 and not fake.sessions


async def test_stripe_error_objects_become_provider_errors(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    with pytest.raises(ProviderError) as info:
        await stripe.create_checkout(checkout_request("price_missing"))
    error = info.value
    assert error.code == "PROVIDER_ERROR" and error.status == 400
    assert error.message == "Stripe: No such price: 'price_missing'"
    assert error.provider_code == "resource_missing"
    assert getattr(error, "param", None) == "line_items[0][price]"

    price = fake.create_price(unit_amount=2900)
    fake.error_next(402, message="Your card was declined.", type="card_error", code="card_declined")
    with pytest.raises(ProviderError) as info:
        await stripe.create_checkout(checkout_request(price))
    assert info.value.message == "Stripe: Your card was declined."
    assert info.value.provider_code == "card_declined"


async def test_the_api_key_never_reaches_errors_or_logs(
    fake: FakeStripe, stripe: StripeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    price = fake.create_price(unit_amount=2900)
    key = fake.api_key
    fake.api_key = "sk_test_rotated"  # Stripe now refuses the key the plugin holds
    with pytest.raises(ProviderError) as info:
        await stripe.create_checkout(checkout_request(price))
    assert info.value.status == 401
    assert "Invalid API Key provided" in info.value.message
    assert key not in info.value.message and key[:12] not in info.value.message
    assert key not in caplog.text and key[-4:] not in info.value.message
    assert fake.webhook_secret not in caplog.text


async def test_unsupported_requests_are_user_errors_before_any_call(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    with pytest.raises(UserInputError) as info:
        await stripe.create_checkout(checkout_request(None))
    assert info.value.code == "PROVIDER_REF_MISSING"
    with pytest.raises(UserInputError) as info:
        await stripe.create_checkout(checkout_request("price_x", success_url=None))
    assert info.value.code == "INVALID_INPUT" and info.value.field == ["successUrl"]
    with pytest.raises(NotSupported):
        await stripe.create_checkout(checkout_request("price_x", purpose="renewal"))
    assert fake.requests == []


# -- subscriptions -----------------------------------------------------------------------------


async def subscribed(
    fake: FakeStripe, stripe: StripeProvider, *, trial_days: int = 0
) -> SubscriptionRef:
    price = fake.create_price(unit_amount=2900)
    request = checkout_request(price, plan=plan_info(price, trial_days=trial_days))
    session = await stripe.create_checkout(request)
    fake.complete_checkout(session.provider_checkout_id or "")
    sub_id = fake.sessions[session.provider_checkout_id or ""]["subscription"]
    fake.outbox.clear()
    return SubscriptionRef(
        subscription_id="3e5b7f00-0000-4000-8000-000000000004",
        provider_subscription_id=sub_id,
        customer=replace(CUSTOMER, provider_customer_id=fake.subscriptions[sub_id]["customer"]),
        plan=plan_info(price),
        quantity=1,
        currency="USD",
    )


async def test_cancel_at_period_end_and_resume(fake: FakeStripe, stripe: StripeProvider) -> None:
    ref = await subscribed(fake, stripe)
    snapshot = await stripe.cancel_subscription(ref, at_period_end=True)
    assert snapshot is not None and snapshot.cancel_at_period_end
    assert snapshot.status == SubscriptionStatus.ACTIVE
    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("POST", f"/v1/subscriptions/{ref.provider_subscription_id}")
    assert sent.params == {"cancel_at_period_end": "true"}
    assert sent.headers["idempotency-key"].startswith(f"billing-gql-{ref.subscription_id}-")

    resumed = await stripe.resume_subscription(ref)
    assert resumed is not None and not resumed.cancel_at_period_end
    assert fake.requests[-1].params == {"cancel_at_period_end": "false"}

    # Cancel → resume → cancel again really cancels again (no replayed answer).
    again = await stripe.cancel_subscription(ref, at_period_end=True)
    assert again is not None and again.cancel_at_period_end
    assert [e["type"] for e in fake.outbox] == ["customer.subscription.updated"] * 3


async def test_cancel_now_deletes(fake: FakeStripe, stripe: StripeProvider) -> None:
    ref = await subscribed(fake, stripe)
    snapshot = await stripe.cancel_subscription(ref, at_period_end=False)
    assert snapshot is not None and snapshot.status == SubscriptionStatus.CANCELED
    assert snapshot.ended_at is not None and snapshot.canceled_at is not None
    assert (fake.requests[-1].method, fake.requests[-1].params) == ("DELETE", {})
    assert [e["type"] for e in fake.outbox] == ["customer.subscription.deleted"]
    with pytest.raises(ProviderError):
        await stripe.cancel_subscription(ref, at_period_end=False)


async def test_pause_collection_and_resume(fake: FakeStripe, stripe: StripeProvider) -> None:
    ref = await subscribed(fake, stripe)
    paused = await stripe.pause_subscription(ref)
    assert paused is not None and paused.status == SubscriptionStatus.PAUSED
    assert fake.requests[-1].params == {"pause_collection": {"behavior": "void"}}
    resumed = await stripe.resume_subscription(ref)
    assert resumed is not None and resumed.status == SubscriptionStatus.ACTIVE
    assert fake.requests[-1].params == {"pause_collection": ""}


async def test_resume_of_a_subscription_stripe_paused(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    ref = await subscribed(fake, stripe)
    fake.pause(ref.provider_subscription_id or "")
    snapshot = await stripe.fetch_subscription(ref)
    assert snapshot is not None and snapshot.status == SubscriptionStatus.PAUSED
    resumed = await stripe.resume_subscription(ref)
    assert resumed is not None and resumed.status == SubscriptionStatus.ACTIVE
    assert fake.requests[-1].path.endswith("/resume")
    assert fake.requests[-1].params == {"billing_cycle_anchor": "unchanged"}


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (ProrationBehavior.CREATE_PRORATIONS, "create_prorations"),
        (ProrationBehavior.NONE, "none"),
        (ProrationBehavior.ALWAYS_INVOICE, "always_invoice"),
    ],
)
async def test_plan_change_swaps_the_item_price(
    fake: FakeStripe, stripe: StripeProvider, ours: ProrationBehavior, theirs: str
) -> None:
    ref = await subscribed(fake, stripe)
    new_price = fake.create_price(unit_amount=9900)
    item_id = fake.subscriptions[ref.provider_subscription_id or ""]["items"]["data"][0]["id"]
    snapshot = await stripe.change_subscription_plan(
        PlanChangeRequest(ref, plan_info(new_price, code="team"), ours)
    )
    assert snapshot is not None and snapshot.plan_ref == new_price
    assert fake.requests[-1].params == {
        "items": [{"id": item_id, "price": new_price, "quantity": "1"}],
        "proration_behavior": theirs,
    }


async def test_plan_change_to_a_plan_without_price_is_a_user_error(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    ref = await subscribed(fake, stripe)
    calls = len(fake.requests)
    with pytest.raises(UserInputError) as info:
        await stripe.change_subscription_plan(
            PlanChangeRequest(ref, plan_info(None), ProrationBehavior.NONE)
        )
    assert info.value.code == "PROVIDER_REF_MISSING" and len(fake.requests) == calls


async def test_operations_need_a_stripe_subscription(stripe: StripeProvider) -> None:
    ref = SubscriptionRef("s", None, CUSTOMER, plan_info("p"), 1, "USD")
    with pytest.raises(UserInputError) as info:
        await stripe.cancel_subscription(ref, at_period_end=True)
    assert info.value.code == "INVALID_STATE"
    assert await stripe.fetch_subscription(ref) is None


async def test_fetch_subscription_reads_items_periods(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    ref = await subscribed(fake, stripe, trial_days=7)
    stored = fake.subscriptions[ref.provider_subscription_id or ""]
    item = stored["items"]["data"][0]
    snapshot = await stripe.fetch_subscription(ref)
    assert snapshot is not None
    assert snapshot.status == SubscriptionStatus.TRIALING
    assert snapshot.current_period_end == datetime.fromtimestamp(item["current_period_end"], UTC)
    assert snapshot.trial_end == snapshot.current_period_end
    assert snapshot.plan_ref == item["price"]["id"] and snapshot.quantity == 1
    assert snapshot.currency == "USD" and snapshot.provider_customer_id == stored["customer"]
    missing = replace(ref, provider_subscription_id="sub_gone")
    assert await stripe.fetch_subscription(missing) is None


async def test_portal_session(fake: FakeStripe, stripe: StripeProvider) -> None:
    ref = await subscribed(fake, stripe)
    url = await stripe.create_portal_session(
        PortalRequest(ref.customer, "https://app.example/account")
    )
    session = next(iter(fake.portal_sessions.values()))
    assert url == session["url"]
    assert fake.requests[-1].params == {
        "customer": ref.customer.provider_customer_id,
        "return_url": "https://app.example/account",
    }
    with pytest.raises(UserInputError) as info:
        await stripe.create_portal_session(PortalRequest(CUSTOMER))
    assert info.value.code == "INVALID_STATE"


async def test_meter_events_are_idempotent_on_our_event_id(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    customer = replace(CUSTOMER, provider_customer_id=fake.create_customer(email="a@b.c"))
    fake.create_meter("api_calls")
    now = datetime.now(UTC).replace(microsecond=0)
    records = [
        UsageRecord("ev-1", "calls", "api_calls", customer, now, Decimal("3")),
        UsageRecord("ev-2", "calls", "api_calls", customer, now, Decimal("1.5")),
        UsageRecord(
            "ev-3",
            "calls",
            "api_calls",
            replace(customer, provider_customer_id=None),
            now,
            Decimal(1),
        ),
        UsageRecord("ev-4", "calls", "api_calls", customer, now - timedelta(days=40), Decimal(1)),
        UsageRecord("ev-5", "calls", "unknown_meter", customer, now, Decimal(1)),
    ]
    result = await stripe.report_usage(records)
    assert result.accepted == 2
    assert set(result.rejected) == {"ev-3", "ev-4", "ev-5"}
    assert "35 calendar days" in result.rejected["ev-4"]
    sent = posts(fake, "/v1/billing/meter_events")[0]
    assert sent == {
        "event_name": "api_calls",
        "payload": {"stripe_customer_id": customer.provider_customer_id, "value": "3"},
        "identifier": "ev-1",
        "timestamp": str(int(now.timestamp())),
    }
    assert fake.meter_events["ev-2"]["payload"]["value"] == "1.5"

    # Sent again (a retry of the whole batch): counted, stored once.
    again = await stripe.report_usage(records[:2])
    assert again.accepted == 2 and not again.rejected
    assert len(fake.meter_events) == 2
    # Even past Stripe's idempotency window (another key), the identifier dedupes.
    fake._idempotent.clear()
    assert (await stripe.report_usage(records[:1])).accepted == 1
    assert len(fake.meter_events) == 2


async def test_meter_events_with_a_refused_key_are_retried_not_rejected(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    customer = replace(CUSTOMER, provider_customer_id=fake.create_customer(email="a@b.c"))
    fake.api_key = "sk_test_rotated"
    with pytest.raises(ProviderError) as info:
        await stripe.report_usage(
            [UsageRecord("ev-1", "calls", "api_calls", customer, datetime.now(UTC), Decimal(1))]
        )
    assert info.value.status == 401 and not fake.meter_events


async def test_meter_events_raise_unavailable_to_be_retried(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    customer = replace(CUSTOMER, provider_customer_id=fake.create_customer(email="a@b.c"))
    fake.fail_next(10, status=503)
    with pytest.raises(ProviderUnavailable):
        await stripe.report_usage(
            [UsageRecord("ev-1", "calls", "api_calls", customer, datetime.now(UTC), Decimal(1))]
        )


async def test_reconcile_returns_snapshots_dated_by_stripe(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    ref = await subscribed(fake, stripe)
    gone = replace(ref, subscription_id="other", provider_subscription_id="sub_gone")
    unknown = replace(ref, subscription_id="third", provider_subscription_id=None)
    fake.cancel(ref.provider_subscription_id or "", at_period_end=True)  # drift we missed
    fake.advance(120)
    result = await stripe.reconcile(
        ReconcileRequest(subscriptions=[ref, gone, unknown], cursor={}, now=datetime.now(UTC))
    )
    assert len(result.events) == 1
    event = result.events[0]
    assert event.subscription is not None and event.subscription.cancel_at_period_end
    assert event.occurred_at == datetime.fromtimestamp(fake.now(), UTC)
    assert event.customer_id == CUSTOMER.id
