"""The provider's calls to AcmePay, against the fake: parameters, idempotency, errors, retries."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from billing_gql import (
    METADATA_CHECKOUT_ID,
    METADATA_CUSTOMER_ID,
    BillingInterval,
    CheckoutRequest,
    CustomerInfo,
    EventKind,
    HttpClientFactory,
    Money,
    NotSupported,
    PlanInfo,
    ProviderContext,
    ProviderError,
    ProviderSettings,
    ProviderUnavailable,
    ReconcileRequest,
    SubscriptionRef,
    SubscriptionStatus,
    UserInputError,
)
from billing_gql_acmepay.plugin import AcmePayProvider
from billing_gql_acmepay.testing import FakeAcmePay

CUSTOMER = CustomerInfo(
    id="0b5c5a9e-0000-4000-8000-000000000001",
    external_id="usr_42",
    email="ann@example.com",
    name="Ann",
    country="GB",
)


def plan(price: str | None, *, trial_days: int = 0, one_time: bool = False) -> PlanInfo:
    return PlanInfo(
        id="0b5c5a9e-0000-4000-8000-0000000000aa",
        code="pro",
        name="Pro",
        interval=BillingInterval.ONE_TIME if one_time else BillingInterval.MONTH,
        interval_count=1,
        trial_days=trial_days,
        provider_ref=price,
    )


def checkout_request(price: str | None, **changes: object) -> CheckoutRequest:
    request = CheckoutRequest(
        checkout_id="0b5c5a9e-0000-4000-8000-0000000000c1",
        purpose="new",
        customer=CUSTOMER,
        plan=plan(price),
        amount=Money(2900, "USD"),
        quantity=1,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        idempotency_key="billing-gql-checkout-0b5c5a9e-0000-4000-8000-0000000000c1",
        success_url="https://app.example/done",
        cancel_url="https://app.example/pricing",
        metadata={
            METADATA_CHECKOUT_ID: "0b5c5a9e-0000-4000-8000-0000000000c1",
            METADATA_CUSTOMER_ID: CUSTOMER.id,
        },
    )
    return replace(request, **changes)  # type: ignore[arg-type]


def ref(provider_subscription_id: str | None) -> SubscriptionRef:
    return SubscriptionRef(
        subscription_id="0b5c5a9e-0000-4000-8000-0000000000s1",
        provider_subscription_id=provider_subscription_id,
        customer=CUSTOMER,
        plan=plan("price_x"),
        quantity=1,
        currency="USD",
    )


async def paid_subscription(acmepay: AcmePayProvider, fake: FakeAcmePay) -> str:
    price = fake.create_price("29.00", "USD")
    session = await acmepay.create_checkout(checkout_request(price))
    assert session.provider_checkout_id is not None
    fake.pay(session.provider_checkout_id)
    fake.drain()
    return str(fake.checkouts[session.provider_checkout_id]["subscription"])


# -- checkout ---------------------------------------------------------------------------------


async def test_a_checkout_sends_the_price_our_ids_and_the_buyer(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    price = fake.create_price("29.00", "USD")
    session = await acmepay.create_checkout(checkout_request(price))
    [call] = fake.requests
    assert (call.method, call.path) == ("POST", "/v1/checkouts")
    assert call.headers["idempotency-key"] == checkout_request(price).idempotency_key
    assert call.body["price"] == price and call.body["quantity"] == 1
    assert call.body["metadata"] == {
        METADATA_CHECKOUT_ID: "0b5c5a9e-0000-4000-8000-0000000000c1",
        METADATA_CUSTOMER_ID: CUSTOMER.id,
    }
    assert call.body["customer_email"] == "ann@example.com"
    assert call.body["customer_reference"] == "usr_42"
    assert "trial_days" not in call.body and "customer" not in call.body
    assert datetime.fromisoformat(call.body["expires_at"]) > datetime.now(UTC)
    created = fake.checkouts[str(session.provider_checkout_id)]
    assert session.url is not None and session.url == created["url"]
    assert session.url.startswith("https://pay.acmepay.test/c/")
    assert session.provider_customer_id is None  # AcmePay makes the customer when paid
    assert session.bank_transfer is None


async def test_a_known_customer_and_a_trial_are_sent(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    price = fake.create_price("29.00", "USD")
    customer = fake.create_customer(email="ann@example.com")
    request = checkout_request(
        price,
        customer=replace(CUSTOMER, provider_customer_id=customer),
        plan=plan(price, trial_days=14),
    )
    session = await acmepay.create_checkout(request)
    body = fake.requests[-1].body
    assert body["customer"] == customer and body["trial_days"] == 14
    assert "customer_email" not in body
    assert session.provider_customer_id == customer


@pytest.mark.parametrize("hours", [-1, 0.01, 24 * 8], ids=["past", "too-soon", "too-far"])
async def test_an_expiry_acmepay_would_refuse_is_left_to_acmepay(
    acmepay: AcmePayProvider, fake: FakeAcmePay, hours: float
) -> None:
    # Billing time (a test clock) may be anywhere: the checkout is still created.
    price = fake.create_price("29.00", "USD")
    expires = datetime.now(UTC) + timedelta(hours=hours)
    await acmepay.create_checkout(checkout_request(price, expires_at=expires))
    assert "expires_at" not in fake.requests[-1].body


async def test_creating_the_same_checkout_twice_returns_the_first(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    price = fake.create_price("29.00", "USD")
    request = checkout_request(price)
    first = await acmepay.create_checkout(request)
    again = await acmepay.create_checkout(request)
    assert again == first and len(fake.checkouts) == 1
    assert fake.requests[-1].headers["idempotency-key"] == request.idempotency_key


async def test_a_price_that_charges_another_amount_is_refused(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    price = fake.create_price("30.00", "USD")
    with pytest.raises(ProviderError, match=r"charges 30\.00 USD, the plan 29\.00 USD"):
        await acmepay.create_checkout(checkout_request(price))


async def test_a_plan_without_an_acmepay_price_or_a_renewal_is_refused(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    with pytest.raises(UserInputError) as info:
        await acmepay.create_checkout(checkout_request(None))
    assert info.value.code == "PROVIDER_REF_MISSING" and info.value.field == ["planCode"]
    with pytest.raises(NotSupported):
        await acmepay.create_checkout(checkout_request("price_x", purpose="renewal"))
    assert fake.requests == []


# -- errors and retries -----------------------------------------------------------------------


async def test_a_refusal_carries_acmepays_message_and_code(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    price = fake.create_price("29.00", "USD")
    fake.error_next(402, code="account_inactive", message="This account cannot accept payments.")
    with pytest.raises(ProviderError) as info:
        await acmepay.create_checkout(checkout_request(price))
    error = info.value
    assert not isinstance(error, ProviderUnavailable)
    assert error.code == "PROVIDER_ERROR" and error.status == 402
    assert error.provider_code == "account_inactive"
    assert error.message == "AcmePay: This account cannot accept payments."
    assert len(fake.requests) == 1  # a refusal is not retried


async def test_a_wrong_api_key_is_a_provider_error_that_does_not_show_the_key(
    fake: FakeAcmePay,
) -> None:
    settings = ProviderSettings(
        "acmepay",
        {"API_KEY": "ak_test_wrong", "WEBHOOK_SECRET": "x", "API_BASE": fake.api_base},
        [],
    )
    provider = AcmePayProvider(
        ProviderContext(
            "acmepay", settings, HttpClientFactory(fake.transport()), logging.getLogger("t")
        )
    )
    try:
        with pytest.raises(ProviderError) as info:
            await provider.create_checkout(checkout_request("price_x"))
    finally:
        await provider.aclose()
    assert info.value.status == 401
    assert "ak_test_wrong" not in str(info.value) and "API_KEY" in str(info.value)


async def test_an_outage_is_retried_then_unavailable(
    acmepay: AcmePayProvider, fake: FakeAcmePay, sleeps: list[float]
) -> None:
    price = fake.create_price("29.00", "USD")
    fake.fail_next(10, status=503)
    with pytest.raises(ProviderUnavailable) as info:
        await acmepay.create_checkout(checkout_request(price))
    assert info.value.code == "PROVIDER_UNAVAILABLE" and info.value.status == 503
    assert len(fake.requests) == 4 and len(sleeps) == 3  # the core client's 3 retries
    fake.clear_faults()
    assert (await acmepay.create_checkout(checkout_request(price))).url


async def test_a_rate_limit_is_waited_out_as_retry_after_says(
    acmepay: AcmePayProvider, fake: FakeAcmePay, sleeps: list[float]
) -> None:
    price = fake.create_price("29.00", "USD")
    fake.fail_next(1, status=429, retry_after=2)
    session = await acmepay.create_checkout(checkout_request(price))
    assert session.url and sleeps == [2.0] and len(fake.checkouts) == 1


async def test_an_unreachable_acmepay_is_unavailable(fake: FakeAcmePay) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def no_sleep(seconds: float) -> None:
        return None

    settings = ProviderSettings(
        "acmepay", {"API_KEY": "k", "WEBHOOK_SECRET": "w", "API_BASE": fake.api_base}, []
    )
    http = HttpClientFactory(httpx.MockTransport(refuse), sleep=no_sleep)
    provider = AcmePayProvider(ProviderContext("acmepay", settings, http, logging.getLogger("t")))
    try:
        with pytest.raises(ProviderUnavailable, match="could not be reached"):
            await provider.create_checkout(checkout_request("price_x"))
    finally:
        await provider.aclose()


# -- subscriptions ----------------------------------------------------------------------------


async def test_cancel_and_resume_answer_the_new_state(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    sub_id = await paid_subscription(acmepay, fake)
    pending = await acmepay.cancel_subscription(ref(sub_id), at_period_end=True)
    assert pending is not None
    assert pending.status == SubscriptionStatus.ACTIVE and pending.cancel_at_period_end
    resumed = await acmepay.resume_subscription(ref(sub_id))
    assert resumed is not None and not resumed.cancel_at_period_end
    # Each operation has its own idempotency key: a second cancel is a new request, not a
    # replay of the first answer.
    again = await acmepay.cancel_subscription(ref(sub_id), at_period_end=True)
    assert again is not None and again.cancel_at_period_end
    ended = await acmepay.cancel_subscription(ref(sub_id), at_period_end=False)
    assert ended is not None and ended.status == SubscriptionStatus.CANCELED
    assert ended.ended_at is not None and ended.checkout_id == checkout_request(None).checkout_id
    keys = [r.headers["idempotency-key"] for r in fake.requests if r.method == "POST"]
    assert len(keys) == len(set(keys)) == 5
    with pytest.raises(ProviderError, match="canceled"):
        await acmepay.resume_subscription(ref(sub_id))


async def test_operations_need_acmepays_subscription_id(acmepay: AcmePayProvider) -> None:
    with pytest.raises(UserInputError) as info:
        await acmepay.cancel_subscription(ref(None), at_period_end=True)
    assert info.value.code == "INVALID_STATE"


async def test_fetch_subscription_reads_it_or_says_none(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    sub_id = await paid_subscription(acmepay, fake)
    snapshot = await acmepay.fetch_subscription(ref(sub_id))
    assert snapshot is not None and snapshot.provider_subscription_id == sub_id
    assert snapshot.status == SubscriptionStatus.ACTIVE and snapshot.currency == "USD"
    assert snapshot.current_period_end is not None and snapshot.plan_ref is not None
    assert await acmepay.fetch_subscription(ref("sub_missing")) is None
    assert await acmepay.fetch_subscription(ref(None)) is None


async def test_reconcile_reads_each_subscription_dated_by_acmepays_clock(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    sub_id = await paid_subscription(acmepay, fake)
    fake.cancel(sub_id, at_period_end=True)  # a change whose webhook we missed
    before = datetime.now(UTC) - timedelta(seconds=1)
    result = await acmepay.reconcile(
        ReconcileRequest(
            subscriptions=[ref(sub_id), ref("sub_missing"), ref(None)],
            cursor={},
            now=datetime.now(UTC),
        )
    )
    [event] = result.events
    assert event.kind == EventKind.SUBSCRIPTION_UPDATED and event.occurred_at >= before
    assert event.subscription is not None and event.subscription.cancel_at_period_end
    assert event.customer_id == CUSTOMER.id


def test_the_capabilities_follow_from_what_the_class_overrides() -> None:
    assert AcmePayProvider.capabilities() == {
        "checkout",
        "hosted_checkout",
        "recurring",
        "refund",
        "cancel",
        "resume",
        "reconcile",
    }


async def test_aclose_closes_the_client_and_a_later_call_opens_another(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    price = fake.create_price("29.00", "USD")
    await acmepay.create_checkout(checkout_request(price))
    await acmepay.aclose()
    await acmepay.aclose()  # twice is harmless
    assert (await acmepay.fetch_subscription(ref("sub_missing"))) is None
