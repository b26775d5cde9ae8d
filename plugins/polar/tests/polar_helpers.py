"""Builders and checks shared by the Polar plugin's tests."""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from billing_gql import (
    BillingInterval,
    CheckoutRequest,
    CustomerInfo,
    Money,
    PlanInfo,
    SubscriptionRef,
)
from billing_gql_polar.testing import PolarDelivery, RecordedCall


def plan_info(
    product: str | None,
    *,
    interval: BillingInterval = BillingInterval.MONTH,
    trial_days: int = 0,
    code: str = "pro",
) -> PlanInfo:
    return PlanInfo(
        id="7c1d4c1e-0000-4000-8000-000000000001",
        code=code,
        name=code.title(),
        interval=interval,
        interval_count=1,
        trial_days=trial_days,
        provider_ref=product,
    )


CUSTOMER = CustomerInfo(
    id="5d1a3c2e-0000-4000-8000-000000000002",
    external_id="usr_42",
    email="ann@example.com",
    name="Ann",
    country="US",
)


def checkout_request(product: str | None, **overrides: Any) -> CheckoutRequest:
    checkout_id = overrides.pop("checkout_id", str(uuid.uuid4()))
    values: dict[str, Any] = {
        "checkout_id": checkout_id,
        "purpose": "new",
        "customer": CUSTOMER,
        "plan": plan_info(product),
        "amount": Money(2900, "USD"),
        "quantity": 1,
        "expires_at": datetime.now(UTC) + timedelta(hours=2),
        "idempotency_key": f"billing-gql-checkout-{checkout_id}",
        "success_url": "https://app.example/ok",
        "cancel_url": "https://app.example/back",
    }
    values.update(overrides)
    return CheckoutRequest(**values)


def subscription_ref(polar_id: str | None, product: str | None = None) -> SubscriptionRef:
    return SubscriptionRef(
        subscription_id="0a7e5b9c-0000-4000-8000-000000000004",
        provider_subscription_id=polar_id,
        customer=CUSTOMER,
        plan=plan_info(product),
        quantity=1,
        currency="USD",
    )


# -- openapi-core adapters: the fake's traffic checked against Polar's published schema ---------


class _CallRequest:
    """A recorded call as openapi-core's ``Request`` protocol."""

    def __init__(self, call: RecordedCall) -> None:
        url = urlsplit(call.url)
        self.host_url = f"{url.scheme}://{url.netloc}"
        self.path = url.path
        self.method = call.method.lower()
        self.body = call.body or None
        self.content_type = call.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(url.query)),
            header=Headers(call.headers),
            cookie=ImmutableMultiDict(),
        )


class _CallResponse:
    def __init__(self, call: RecordedCall) -> None:
        self.status_code = call.status
        self.content_type = "application/json"
        self.headers = Headers(call.response_headers)
        self.data = json.dumps(call.response).encode()


class _WebhookRequest:
    """A delivery as openapi-core's ``WebhookRequest`` protocol (named by its event type)."""

    def __init__(self, delivery: PolarDelivery) -> None:
        self.name = delivery.type
        self.method = "post"
        self.body = delivery.body
        self.content_type = delivery.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(),
            header=Headers(delivery.headers),
            cookie=ImmutableMultiDict(),
        )


@contextmanager
def _schema_checks() -> Iterator[None]:
    with warnings.catch_warnings():
        # Polar's spec also lists an openIdConnect scheme, which openapi-core cannot check (it
        # warns and moves on to the bearer schemes, which it does check).
        warnings.filterwarnings("ignore", "Unsupported scheme type", UserWarning)
        yield


def validate_request(openapi: OpenAPI, call: RecordedCall) -> None:
    """``call``'s method, path, bearer header and body are what Polar's schema accepts."""
    with _schema_checks():
        openapi.validate_request(_CallRequest(call))


def request_errors(openapi: OpenAPI, call: RecordedCall) -> list[Exception]:
    """What openapi-core finds wrong with ``call``'s request (empty: nothing)."""
    with _schema_checks():
        return list(openapi.iter_request_errors(_CallRequest(call)))


def validate_response(openapi: OpenAPI, call: RecordedCall) -> None:
    """``call``'s answer (status and body) is one Polar's schema lists for the operation."""
    with _schema_checks():
        openapi.validate_response(_CallRequest(call), _CallResponse(call))


def validate_calls(openapi: OpenAPI, calls: Iterable[RecordedCall]) -> int:
    """Every request and every answer of ``calls`` against the schema; returns how many."""
    count = 0
    with _schema_checks():
        for call in calls:
            request = _CallRequest(call)
            openapi.validate_request(request)
            openapi.validate_response(request, _CallResponse(call))
            count += 1
    return count


def validate_deliveries(openapi: OpenAPI, deliveries: Iterable[PolarDelivery]) -> int:
    """Every delivery's body against the schema of its webhook; returns how many."""
    count = 0
    with _schema_checks():
        for delivery in deliveries:
            openapi.validate_request(_WebhookRequest(delivery))
            count += 1
    return count
