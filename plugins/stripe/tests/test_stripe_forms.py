"""Stripe's form encoding as the ``stripe`` SDK sends it, read back by the fake Stripe."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from stripe_helpers import CUSTOMER, checkout_request, form, plan_info

from billing_gql_stripe.plugin import StripeProvider
from billing_gql_stripe.testing import FakeStripe, decode


async def test_the_sdk_sends_the_documented_bracket_notation(
    fake: FakeStripe, stripe: StripeProvider
) -> None:
    price = fake.create_price(unit_amount=2900)
    request = checkout_request(price, plan=plan_info(price, trial_days=14))
    await stripe.create_checkout(request)
    body = fake.requests[-1].body.decode()
    ids = f"[billing_gql_checkout_id]={request.checkout_id}"
    customer = f"[billing_gql_customer_id]={CUSTOMER.id}"
    assert unquote(body) == (
        f"mode=subscription&line_items[0][price]={price}&line_items[0][quantity]=1"
        "&success_url=https://app.example/ok&cancel_url=https://app.example/no"
        f"&client_reference_id={request.checkout_id}"
        f"&metadata{ids}&metadata{customer}"
        f"&expires_at={int(request.expires_at.timestamp())}"
        "&customer_email=ann@example.com"
        f"&subscription_data[metadata]{ids}&subscription_data[metadata]{customer}"
        "&subscription_data[trial_period_days]=14"
    )
    # The URLs are percent-encoded on the wire.
    assert "success_url=https%3A%2F%2Fapp.example%2Fok" in body


def test_decode_inverts_encode() -> None:
    params = {
        "mode": "payment",
        "line_items": [
            {"price": "price_1", "quantity": "2"},
            {"price": "price_2", "quantity": "1"},
        ],
        "metadata": {"a b": "c&d=e", "empty": ""},
        "pause_collection": "",
    }
    assert decode(form(params)) == params


def test_decode_appends_for_empty_brackets_and_rejects_garbage() -> None:
    assert decode("expand[]=a&expand[]=b") == {"expand": ["a", "b"]}
    assert decode(b"x[1]=a&x[0]=b") == {"x": ["b", "a"]}
    assert decode("x[0]=a&x[2]=b") == {"x": {"0": "a", "2": "b"}}
    with pytest.raises(ValueError):
        decode("a]b=1")
    with pytest.raises(ValueError):
        decode("a=1&a[b]=2")
