"""The provider against the fake Polar: request bodies (checked against Polar's OpenAPI),
headers, operations, retries and errors."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from openapi_core import OpenAPI
from polar_helpers import (
    CUSTOMER,
    checkout_request,
    plan_info,
    subscription_ref,
    validate_calls,
    validate_request,
)

from billing_gql import (
    METADATA_CHECKOUT_ID,
    METADATA_CUSTOMER_ID,
    BillingInterval,
    EventKind,
    NotSupported,
    PlanChangeRequest,
    PortalRequest,
    ProrationBehavior,
    ProviderError,
    ProviderUnavailable,
    ReconcileRequest,
    SubscriptionStatus,
    UsageRecord,
    UserInputError,
)
from billing_gql_polar.api import PolarValidationError
from billing_gql_polar.plugin import PolarProvider
from billing_gql_polar.testing import FakePolar


async def paid_subscription(
    fake: FakePolar, polar: PolarProvider, *, benefits: list[str] | None = None
) -> tuple[str, str]:
    """(Polar subscription id, product id) of a checkout the buyer paid."""
    product = fake.create_product(name="Pro", prices={"usd": 2900}, benefits=benefits or [])
    session = await polar.create_checkout(checkout_request(product, plan=plan_info(product)))
    assert session.provider_checkout_id is not None
    fake.pay(session.provider_checkout_id)
    fake.drain()
    sub_id = fake.checkouts[session.provider_checkout_id]["subscription_id"]
    return str(sub_id), product


def bodies(fake: FakePolar, method: str, path: str) -> list[Any]:
    return [c.json for c in fake.requests_to(method, path)]


async def test_checkout_body_is_schema_valid_and_carries_our_ids(
    fake: FakePolar, polar: PolarProvider, openapi: OpenAPI
) -> None:
    product = fake.create_product(name="Pro", prices={"usd": 2900})
    request = checkout_request(
        product, plan=plan_info(product, trial_days=14), metadata={"source": "pricing-page"}
    )
    session = await polar.create_checkout(request)

    [call] = fake.calls
    assert (call.method, call.path, call.status) == ("POST", "/v1/checkouts/", 201)
    assert call.url.startswith("https://sandbox-api.polar.sh/v1/")
    assert call.headers["authorization"] == f"Bearer {fake.access_token}"
    assert call.headers["content-type"] == "application/json"
    validate_request(openapi, call)
    assert call.json == {
        "products": [product],
        "external_customer_id": CUSTOMER.external_id,
        "customer_email": CUSTOMER.email,
        "customer_name": CUSTOMER.name,
        "currency": "usd",
        "success_url": "https://app.example/ok",
        "return_url": "https://app.example/back",
        "allow_discount_codes": False,
        "trial_interval": "day",
        "trial_interval_count": 14,
        "metadata": {
            "source": "pricing-page",
            METADATA_CHECKOUT_ID: request.checkout_id,
            METADATA_CUSTOMER_ID: CUSTOMER.id,
        },
    }
    polar_checkout = fake.checkouts[str(session.provider_checkout_id)]
    assert session.url == polar_checkout["url"]
    assert polar_checkout["active_trial_interval_count"] == 14
    # Polar's page closes after an hour, before ours (two hours): its expiry is reported.
    assert session.expires_at == datetime.fromisoformat(polar_checkout["expires_at"])


async def test_checkout_without_a_trial_turns_the_products_trial_off(
    fake: FakePolar, polar: PolarProvider, openapi: OpenAPI
) -> None:
    product = fake.create_product(name="Pro", prices={"usd": 2900}, trial_days=7)
    later = datetime.now(UTC) + timedelta(minutes=30)
    session = await polar.create_checkout(
        checkout_request(product, expires_at=later, success_url=None, cancel_url=None)
    )
    [body] = bodies(fake, "POST", "/v1/checkouts/")
    assert body["allow_trial"] is False
    # A discount code would make the completion fall short of our amount: none is offered.
    assert body["allow_discount_codes"] is False
    assert fake.checkouts[str(session.provider_checkout_id)]["allow_discount_codes"] is False
    assert "success_url" not in body and "return_url" not in body
    assert "trial_interval" not in body
    assert fake.checkouts[str(session.provider_checkout_id)]["active_trial_interval"] is None
    assert session.expires_at is None  # ours ends first
    one_time = fake.create_product(name="Once", prices={"usd": 9900}, recurring_interval=None)
    await polar.create_checkout(
        checkout_request(one_time, plan=plan_info(one_time, interval=BillingInterval.ONE_TIME))
    )
    assert "allow_trial" not in bodies(fake, "POST", "/v1/checkouts/")[1]
    assert validate_calls(openapi, fake.calls) == 2


async def test_checkout_refusals(fake: FakePolar, polar: PolarProvider) -> None:
    with pytest.raises(UserInputError) as missing:
        await polar.create_checkout(checkout_request(None))
    assert missing.value.code == "PROVIDER_REF_MISSING"
    with pytest.raises(NotSupported):
        await polar.create_checkout(checkout_request(str(uuid.uuid4()), purpose="renewal"))
    assert fake.calls == []
    # Polar's 422: the message names the field and says what Polar said.
    with pytest.raises(PolarValidationError) as invalid:
        await polar.create_checkout(checkout_request(str(uuid.uuid4())))
    assert invalid.value.code == "PROVIDER_ERROR"
    assert (
        invalid.value.message == "Polar rejected the request: products.0: Product does not exist."
    )
    assert [(e.field, e.msg) for e in invalid.value.errors] == [
        ("products.0", "Product does not exist.")
    ]
    with pytest.raises(PolarValidationError) as not_a_uuid:
        await polar.create_checkout(checkout_request("price_not_a_polar_product"))
    assert "products.0" in not_a_uuid.value.message and "uuid4" in not_a_uuid.value.message


async def test_other_4xx_are_provider_errors_with_polars_detail(
    fake: FakePolar, polar: PolarProvider
) -> None:
    sub_id, _ = await paid_subscription(fake, polar)
    await polar.cancel_subscription(subscription_ref(sub_id), at_period_end=False)
    with pytest.raises(ProviderError) as info:  # ended: it cannot be set to end any more
        await polar.cancel_subscription(subscription_ref(sub_id), at_period_end=True)
    assert info.value.code == "PROVIDER_ERROR" and info.value.status == 403
    assert info.value.message == (
        "Polar: This subscription is already canceled or will be at the end of the period."
    )
    assert info.value.provider_code == "AlreadyCanceledSubscription"
    with pytest.raises(UserInputError, match="not known to Polar") as unknown:
        await polar.cancel_subscription(subscription_ref(None), at_period_end=True)
    assert unknown.value.code == "INVALID_STATE"


async def test_429_is_retried_honouring_retry_after(
    fake: FakePolar, polar: PolarProvider, sleeps: list[float]
) -> None:
    product = fake.create_product(name="Pro", prices={"usd": 2900})
    fake.fail_next(2, status=429, retry_after="3")
    session = await polar.create_checkout(checkout_request(product))
    assert session.url is not None
    assert sleeps == [3.0, 3.0]
    assert [c.status for c in fake.calls] == [429, 429, 201]


async def test_429_and_5xx_beyond_the_retries_are_provider_unavailable(
    fake: FakePolar, polar: PolarProvider, sleeps: list[float]
) -> None:
    product = fake.create_product(name="Pro", prices={"usd": 2900})
    fake.fail_next(10, status=429, retry_after="1")
    with pytest.raises(ProviderUnavailable) as limited:
        await polar.create_checkout(checkout_request(product))
    assert limited.value.code == "PROVIDER_UNAVAILABLE" and limited.value.status == 429
    assert len(fake.calls) == 4 and sleeps == [1.0, 1.0, 1.0]  # the first try and 3 retries
    fake.clear_faults()
    sub_id, _ = await paid_subscription(fake, polar)
    fake.calls.clear()
    fake.fail_next(2, status=503, retry_after=None)
    snapshot = await polar.fetch_subscription(subscription_ref(sub_id))  # a GET: retried
    assert snapshot is not None and [c.status for c in fake.calls] == [503, 503, 200]
    fake.calls.clear()
    fake.fail_next(1, status=503, retry_after=None)
    with pytest.raises(ProviderUnavailable):  # a POST is not repeated after a 5xx
        await polar.create_checkout(checkout_request(product))
    assert [c.status for c in fake.calls] == [503]


async def test_a_429_whose_retry_after_is_a_date_is_provider_unavailable(
    fake: FakePolar, polar: PolarProvider, sleeps: list[float]
) -> None:
    # Retry-After may be an HTTP date; the SDK reads it as an integer.
    product = fake.create_product(name="Pro", prices={"usd": 2900})
    fake.fail_next(10, status=429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    with pytest.raises(ProviderUnavailable) as limited:
        await polar.create_checkout(checkout_request(product))
    assert limited.value.status == 429 and len(fake.calls) == 4


async def test_requests_safe_to_repeat_are_retried_after_a_5xx(
    fake: FakePolar, polar: PolarProvider
) -> None:
    sub_id, _ = await paid_subscription(fake, polar)
    ref = subscription_ref(sub_id)
    fake.calls.clear()
    fake.fail_next(2, status=502, retry_after=None)
    snapshot = await polar.cancel_subscription(ref, at_period_end=True)  # sets a flag
    assert snapshot is not None and snapshot.cancel_at_period_end is True
    assert [(c.method, c.status) for c in fake.calls] == [("PATCH", 502)] * 2 + [("PATCH", 200)]
    fake.calls.clear()
    fake.fail_next(1, status=503, retry_after=None)
    result = await polar.report_usage([usage("evt_r1")])  # deduplicated by external_id
    assert result.accepted == 1 and [c.status for c in fake.calls] == [503, 200]
    fake.calls.clear()
    fake.fail_next(1, status=503, retry_after=None)
    with pytest.raises(ProviderUnavailable):  # changing the product twice is not once
        await polar.change_subscription_plan(
            PlanChangeRequest(
                subscription=ref,
                new_plan=replace(
                    ref.plan, provider_ref=fake.create_product(name="Team", prices={"usd": 9900})
                ),
                proration=ProrationBehavior.CREATE_PRORATIONS,
            )
        )
    assert [(c.method, c.status) for c in fake.calls] == [("PATCH", 503)]


async def test_the_token_is_never_logged_nor_in_errors(
    fake: FakePolar, polar: PolarProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    product = fake.create_product(name="Pro", prices={"usd": 2900})
    await polar.create_checkout(checkout_request(product))
    detail = f"Token {fake.access_token} was revoked; use polar_oat_N3wT0ken instead"
    fake.error_next(401, {"error": "invalid_token", "detail": detail})
    with pytest.raises(ProviderError) as info:
        await polar.create_checkout(checkout_request(product))
    assert fake.access_token not in info.value.message
    # Ours blanked whole; anything else shaped like a Polar token blanked after its prefix.
    assert info.value.message == "Polar: Token *** was revoked; use polar_oat_*** instead"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "polar POST /v1/checkouts/" in logged
    assert fake.access_token not in logged and fake.webhook_secret not in logged
    assert fake.access_token not in repr(polar.settings)


async def test_cancel_and_uncancel_send_exactly_one_body_shape(
    fake: FakePolar, polar: PolarProvider, openapi: OpenAPI
) -> None:
    sub_id, _ = await paid_subscription(fake, polar)
    fake.calls.clear()
    snapshot = await polar.cancel_subscription(subscription_ref(sub_id), at_period_end=True)
    assert snapshot is not None and snapshot.cancel_at_period_end is True
    assert snapshot.status == SubscriptionStatus.ACTIVE
    assert bodies(fake, "PATCH", f"/v1/subscriptions/{sub_id}") == [{"cancel_at_period_end": True}]

    fake.calls.clear()
    snapshot = await polar.resume_subscription(subscription_ref(sub_id))
    assert snapshot is not None and snapshot.cancel_at_period_end is False
    assert [(c.method, c.json) for c in fake.calls] == [
        ("GET", None),
        ("PATCH", {"cancel_at_period_end": False}),
    ]
    fake.pause(sub_id)
    fake.calls.clear()
    snapshot = await polar.resume_subscription(subscription_ref(sub_id))
    assert snapshot is not None and snapshot.status == SubscriptionStatus.ACTIVE
    assert bodies(fake, "PATCH", "/v1/subscriptions/") == [{"resume": True}]
    assert validate_calls(openapi, fake.calls) == 2


ALREADY_CANCELED = {
    "error": "AlreadyCanceledSubscription",
    "detail": "This subscription is already canceled or will be at the end of the period.",
}


async def test_a_cancel_polar_refuses_because_it_already_holds_answers_polars_state(
    fake: FakePolar, polar: PolarProvider
) -> None:
    # Polar refuses to cancel what is already canceled or set to end (403): a second cancel,
    # or the retry of one whose answer was lost. The plugin reads what holds and answers it.
    sub_id, _ = await paid_subscription(fake, polar)
    ref = subscription_ref(sub_id)
    fake.cancel(sub_id, at_period_end=True)  # by the customer, in Polar's portal
    fake.calls.clear()
    fake.error_next(403, ALREADY_CANCELED)
    snapshot = await polar.cancel_subscription(ref, at_period_end=True)
    assert snapshot is not None and snapshot.cancel_at_period_end is True
    assert snapshot.status == SubscriptionStatus.ACTIVE and snapshot.updated_at is not None
    assert [(c.method, c.status) for c in fake.calls] == [("PATCH", 403), ("GET", 200)]

    fake.revoke(sub_id)
    fake.error_next(403, ALREADY_CANCELED)
    ended = await polar.cancel_subscription(ref, at_period_end=False)
    assert ended is not None and ended.status == SubscriptionStatus.CANCELED


async def test_a_retried_cancel_whose_first_answer_was_lost_is_not_an_error(
    fake: FakePolar, polar: PolarProvider
) -> None:
    sub_id, _ = await paid_subscription(fake, polar)
    ref = subscription_ref(sub_id)
    fake.calls.clear()
    fake.fail_next(1, status=502, retry_after=None, applied=True)  # done, answer lost
    snapshot = await polar.cancel_subscription(ref, at_period_end=True)
    assert snapshot is not None and snapshot.cancel_at_period_end is True
    assert [(c.method, c.status) for c in fake.calls] == [
        ("PATCH", 502),
        ("PATCH", 403),  # the client's retry: Polar refuses a second cancel
        ("GET", 200),
    ]
    fake.calls.clear()
    fake.fail_next(1, status=502, retry_after=None, applied=True)
    snapshot = await polar.cancel_subscription(ref, at_period_end=False)
    assert [(c.method, c.status) for c in fake.calls] == [
        ("DELETE", 502),
        ("DELETE", 403),
        ("GET", 200),
    ]
    assert snapshot is not None and snapshot.status == SubscriptionStatus.CANCELED


async def test_a_refusal_that_does_not_hold_stays_an_error(
    fake: FakePolar, polar: PolarProvider
) -> None:
    sub_id, _ = await paid_subscription(fake, polar)
    ref = subscription_ref(sub_id)
    fake.error_next(403, ALREADY_CANCELED)  # yet Polar's subscription is live, not ending
    with pytest.raises(ProviderError) as info:
        await polar.cancel_subscription(ref, at_period_end=True)
    assert info.value.provider_code == "AlreadyCanceledSubscription"
    fake.error_next(403, {"error": "NotPermitted", "detail": "Not permitted"})
    with pytest.raises(ProviderError, match="Not permitted"):
        await polar.cancel_subscription(ref, at_period_end=False)


async def test_an_uncancel_polar_refuses_as_nothing_to_undo_answers_polars_state(
    fake: FakePolar, polar: PolarProvider
) -> None:
    sub_id, _ = await paid_subscription(fake, polar)
    fake.cancel(sub_id, at_period_end=True)
    pending = await polar.api().get_subscription(sub_id)
    assert pending is not None
    fake.uncancel(sub_id)  # the customer undoes it in Polar's portal meanwhile
    fake.error_next(200, pending)  # our read still saw the cancel pending …
    fake.error_next(400, {"error": "BadRequest", "detail": "Bad request"})  # nothing to undo
    fake.calls.clear()
    snapshot = await polar.resume_subscription(subscription_ref(sub_id))
    assert snapshot is not None and snapshot.cancel_at_period_end is False
    assert snapshot.status == SubscriptionStatus.ACTIVE
    assert [(c.method, c.status) for c in fake.calls] == [
        ("GET", 200),
        ("PATCH", 400),
        ("GET", 200),
    ]


async def test_cancel_now_revokes_with_delete(
    fake: FakePolar, polar: PolarProvider, openapi: OpenAPI
) -> None:
    sub_id, _ = await paid_subscription(fake, polar)
    fake.calls.clear()
    snapshot = await polar.cancel_subscription(subscription_ref(sub_id), at_period_end=False)
    [call] = fake.calls
    assert (call.method, call.path, call.body) == ("DELETE", f"/v1/subscriptions/{sub_id}", b"")
    assert snapshot is not None and snapshot.status == SubscriptionStatus.CANCELED
    assert snapshot.ended_at is not None and snapshot.cancel_at_period_end is False
    assert fake.subscriptions[sub_id]["status"] == "canceled"
    validate_calls(openapi, fake.calls)


@pytest.mark.parametrize(
    ("proration", "polar_value"),
    [
        (ProrationBehavior.CREATE_PRORATIONS, "prorate"),
        (ProrationBehavior.ALWAYS_INVOICE, "invoice"),
        (ProrationBehavior.NONE, "next_period"),
    ],
)
async def test_plan_change_maps_proration(
    fake: FakePolar,
    polar: PolarProvider,
    openapi: OpenAPI,
    proration: ProrationBehavior,
    polar_value: str,
) -> None:
    sub_id, old = await paid_subscription(fake, polar)
    new = fake.create_product(name="Team", prices={"usd": 9900})
    fake.calls.clear()
    snapshot = await polar.change_subscription_plan(
        PlanChangeRequest(
            subscription=subscription_ref(sub_id, old),
            new_plan=plan_info(new, code="team"),
            proration=proration,
        )
    )
    assert bodies(fake, "PATCH", "/v1/subscriptions/") == [
        {"product_id": new, "proration_behavior": polar_value}
    ]
    assert snapshot is not None
    # next_period: Polar keeps the old product until the period ends.
    assert snapshot.plan_ref == (old if proration == ProrationBehavior.NONE else new)
    validate_calls(openapi, fake.calls)
    with pytest.raises(UserInputError) as missing:
        await polar.change_subscription_plan(
            PlanChangeRequest(subscription_ref(sub_id), plan_info(None), proration)
        )
    assert missing.value.code == "PROVIDER_REF_MISSING"


async def test_portal_is_a_customer_session(
    fake: FakePolar, polar: PolarProvider, openapi: OpenAPI
) -> None:
    await paid_subscription(fake, polar)
    fake.calls.clear()
    url = await polar.create_portal_session(
        PortalRequest(customer=CUSTOMER, return_url="https://app.example/account")
    )
    assert bodies(fake, "POST", "/v1/customer-sessions/") == [
        {"external_customer_id": CUSTOMER.external_id, "return_url": "https://app.example/account"}
    ]
    [session] = fake.sessions.values()
    assert url == session["customer_portal_url"]
    validate_calls(openapi, fake.calls)
    stranger = PortalRequest(customer=replace(CUSTOMER, external_id="nobody"))
    with pytest.raises(PolarValidationError, match="external_customer_id: Customer does not exist"):
        await polar.create_portal_session(stranger)


def usage(event_id: str, value: str = "1", **properties: Any) -> UsageRecord:
    return UsageRecord(
        event_id=event_id,
        meter_code="api_calls",
        provider_event_name="api_call",
        customer=CUSTOMER,
        timestamp=datetime(2026, 11, 1, 12, 0, tzinfo=UTC),
        value=Decimal(value),
        properties=properties,
    )


async def test_usage_is_ingested_once_per_event_id(
    fake: FakePolar, polar: PolarProvider, openapi: OpenAPI
) -> None:
    result = await polar.report_usage(
        [usage("evt_1", "2.5", model="gpt", tokens=1200, nested={"no": 1}), usage("evt_2")]
    )
    assert result.accepted == 2 and result.rejected == {}
    [body] = bodies(fake, "POST", "/v1/events/ingest")
    assert body["events"][0] == {
        "name": "api_call",
        "external_customer_id": CUSTOMER.external_id,
        "external_id": "evt_1",
        "timestamp": "2026-11-01T12:00:00+00:00",
        "metadata": {"model": "gpt", "tokens": 1200, "value": 2.5},
    }
    assert fake.calls[-1].response == {"inserted": 2, "duplicates": 0}
    again = await polar.report_usage([usage("evt_1"), usage("evt_3", "4")])
    assert again.accepted == 2 and fake.calls[-1].response == {"inserted": 1, "duplicates": 1}
    assert sorted(fake.events) == ["evt_1", "evt_2", "evt_3"]
    assert fake.events["evt_3"]["metadata"] == {"value": 4}
    assert validate_calls(openapi, fake.calls) == 2


async def test_usage_events_polar_refuses_are_rejected_and_the_rest_sent(
    fake: FakePolar, polar: PolarProvider
) -> None:
    future = datetime.now(UTC) + timedelta(days=1)
    records = [usage("ok_1"), replace(usage("bad"), timestamp=future)]
    result = await polar.report_usage(records)
    assert result.accepted == 1
    assert result.rejected == {"bad": "Polar: Timestamp must be in the past."}
    assert list(fake.events) == ["ok_1"]


async def test_fetch_and_reconcile_read_polars_state(
    fake: FakePolar, polar: PolarProvider, openapi: OpenAPI
) -> None:
    flag = fake.create_benefit(description="API", metadata={"feature": "api", "limit": 1000})
    sub_id, product = await paid_subscription(fake, polar, benefits=[flag])
    fake.cancel(sub_id, at_period_end=True)  # in Polar's dashboard; we missed the delivery
    assert await polar.fetch_subscription(subscription_ref(None)) is None
    fetched = await polar.fetch_subscription(subscription_ref(sub_id))
    assert fetched is not None and fetched.cancel_at_period_end is True
    assert fetched.plan_ref == product and fetched.currency == "USD"
    assert fetched.external_customer_id == CUSTOMER.external_id

    fake.calls.clear()
    gone = subscription_ref(str(uuid.uuid4()))
    result = await polar.reconcile(
        ReconcileRequest(
            subscriptions=[subscription_ref(sub_id), gone, subscription_ref(None)],
            cursor={},
            now=datetime.now(UTC),
        )
    )
    kinds = [e.kind for e in result.events]
    assert kinds == [EventKind.SUBSCRIPTION_UPDATED, EventKind.GRANT_UPDATED]
    snap = result.events[0].subscription
    assert snap is not None and snap.cancel_at_period_end is True
    grant = result.events[1].grant
    assert (
        grant is not None and grant.granted and grant.metadata == {"feature": "api", "limit": 1000}
    )
    assert grant.external_customer_id == CUSTOMER.external_id
    assert [(c.method, c.status) for c in fake.calls] == [("GET", 200), ("GET", 404), ("GET", 200)]
    validate_calls(openapi, fake.calls)
