"""Builders shared by the Stripe plugin's tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from billing_gql import (
    BillingInterval,
    CheckoutRequest,
    CustomerInfo,
    Money,
    PlanInfo,
)


def plan_info(
    price: str | None,
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
        provider_ref=price,
    )


CUSTOMER = CustomerInfo(
    id="5d1a3c2e-0000-4000-8000-000000000002",
    external_id="usr_42",
    email="ann@example.com",
    name="Ann",
    country="US",
)


def checkout_request(price: str | None, **overrides: Any) -> CheckoutRequest:
    checkout_id = overrides.pop("checkout_id", "9b2f0a11-0000-4000-8000-000000000003")
    values: dict[str, Any] = {
        "checkout_id": checkout_id,
        "purpose": "new",
        "customer": CUSTOMER,
        "plan": plan_info(price),
        "amount": Money(2900, "USD"),
        "quantity": 1,
        "expires_at": datetime.now(UTC) + timedelta(hours=1),
        "idempotency_key": f"billing-gql-checkout-{checkout_id}",
        "success_url": "https://app.example/ok",
        "cancel_url": "https://app.example/no",
    }
    values.update(overrides)
    return CheckoutRequest(**values)


def form(params: Mapping[str, Any]) -> str:
    """``params`` in Stripe's bracket notation (arrays indexed, ``None`` left out, booleans as
    ``true``/``false``): a body to post to the fake Stripe directly, as the SDK would."""
    pairs: list[tuple[str, str]] = []

    def add(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                add(f"{name}[{key}]", item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                add(f"{name}[{index}]", item)
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        elif value is not None:
            pairs.append((name, str(value)))

    for key, value in params.items():
        add(key, value)
    return urlencode(pairs)
