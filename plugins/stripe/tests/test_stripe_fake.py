"""The fake Stripe itself: shapes of Stripe's fixtures, validation, idempotency, faults."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from stripe_helpers import form

from billing_gql_stripe.testing import FakeStripe, load_fixture
from billing_gql_stripe.webhooks import verify_signature


@pytest.fixture
def client(fake: FakeStripe) -> Iterator[httpx.Client]:
    with httpx.Client(
        transport=fake.transport(),
        base_url="https://api.stripe.test",
        headers={"authorization": f"Bearer {fake.api_key}"},
    ) as http:
        yield http


def post(
    client: httpx.Client, path: str, params: dict[str, Any], key: str | None = None
) -> httpx.Response:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if key is not None:
        headers["idempotency-key"] = key
    return client.post(path, content=form(params), headers=headers)


def session_params(price: str, **extra: Any) -> dict[str, Any]:
    return {
        "mode": "subscription",
        "line_items": [{"price": price, "quantity": 1}],
        "success_url": "https://x/ok",
        **extra,
    }


def test_every_object_has_the_shape_of_stripes_fixture(
    fake: FakeStripe, client: httpx.Client
) -> None:
    price = fake.create_price(unit_amount=1000)
    one_time = fake.create_price(unit_amount=500, interval=None)
    session = post(client, "/v1/checkout/sessions", session_params(price), "k1").json()
    fake.complete_checkout(session["id"])
    pay = post(
        client,
        "/v1/checkout/sessions",
        {
            "mode": "payment",
            "line_items": [{"price": one_time, "quantity": 1}],
            "success_url": "https://x",
        },
        "k2",
    ).json()
    fake.complete_checkout(pay["id"])
    fake.refund(fake.sessions[pay["id"]]["payment_intent"], 100)
    customer = next(iter(fake.customers))
    post(client, "/v1/billing_portal/sessions", {"customer": customer}, "k3")
    post(
        client,
        "/v1/billing/meter_events",
        {"event_name": "calls", "payload": {"stripe_customer_id": customer, "value": "1"}},
        "k4",
    )
    stores = {
        "price": fake.prices,
        "customer": fake.customers,
        "checkout.session": fake.sessions,
        "subscription": fake.subscriptions,
        "invoice": fake.invoices,
        "invoice_payment": fake.invoice_payments,
        "payment_intent": fake.payment_intents,
        "charge": fake.charges,
        "billing_portal.session": fake.portal_sessions,
        "billing.meter_event": fake.meter_events,
    }
    for resource, store in stores.items():
        assert store, resource
        expected = set(load_fixture(resource))
        for obj in store.values():
            assert set(obj) == expected, resource
    item = next(iter(fake.subscriptions.values()))["items"]["data"][0]
    assert set(item) == set(load_fixture("subscription_item"))
    refund = next(iter(fake.charges.values()))
    for charge in fake.charges.values():
        if charge["refunds"]["data"]:
            refund = charge["refunds"]["data"][0]
    assert set(refund) == set(load_fixture("refund"))
    assert fake.events and all(set(e) == set(load_fixture("event")) for e in fake.events)


def test_answers_carry_stripe_headers(fake: FakeStripe, client: httpx.Client) -> None:
    response = client.get("/v1/subscriptions/sub_missing")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "message": "No such subscription: 'sub_missing'",
            "param": "id",
        }
    }
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["stripe-version"] == "2025-03-31.basil"
    date = email.utils.parsedate_to_datetime(response.headers["date"])
    assert abs(date.timestamp() - fake.now()) < 1


@pytest.mark.parametrize(
    ("params", "param", "message"),
    [
        (
            {"line_items": [{"price": "P", "quantity": 1}], "success_url": "u"},
            "mode",
            "Missing required param: mode.",
        ),
        ({"mode": "nope"}, "mode", "Invalid mode"),
        (
            {"mode": "subscription", "success_url": "u"},
            "line_items",
            "Missing required param: line_items.",
        ),
        (
            {"mode": "subscription", "line_items": [{"price": "P"}], "success_url": "u"},
            "line_items[0][quantity]",
            "Missing",
        ),
        (
            {
                "mode": "subscription",
                "line_items": [{"price": "P", "quantity": 0}],
                "success_url": "u",
            },
            "line_items[0][quantity]",
            "greater than",
        ),
        (
            {"mode": "subscription", "line_items": [{"price": "P", "quantity": 1}]},
            "success_url",
            "Missing required param: success_url.",
        ),
        (
            {"mode": "payment", "line_items": [{"price": "P", "quantity": 1}], "success_url": "u"},
            "line_items",
            "recurring price",
        ),
        (
            {
                "mode": "subscription",
                "line_items": [{"price": "P", "quantity": 1}],
                "success_url": "u",
                "colour": "red",
            },
            "colour",
            "Received unknown parameter: colour",
        ),
        (
            {
                "mode": "subscription",
                "line_items": [{"price": "P", "quantity": 1}],
                "success_url": "u",
                "customer": "cus_x",
                "customer_email": "a@b",
            },
            "customer_email",
            "only specify one",
        ),
        (
            {
                "mode": "subscription",
                "line_items": [{"price": "P", "quantity": 1}],
                "success_url": "u",
                "expires_at": 1,
            },
            "expires_at",
            "30 minutes",
        ),
        (
            {
                "mode": "subscription",
                "line_items": [{"price": "P", "quantity": 1}],
                "success_url": "u",
                "metadata": {"k" * 41: "v"},
            },
            "metadata",
            "40 characters",
        ),
        (
            {
                "mode": "subscription",
                "line_items": [{"price": "P", "quantity": 1}],
                "success_url": "u",
                "subscription_data": {"trial_period_days": 0},
            },
            "subscription_data[trial_period_days]",
            "greater than",
        ),
    ],
)
def test_checkout_sessions_are_validated_like_stripe(
    fake: FakeStripe, client: httpx.Client, params: dict[str, Any], param: str, message: str
) -> None:
    price = fake.create_price(unit_amount=100)
    params = json.loads(json.dumps(params).replace('"P"', json.dumps(price)))
    response = post(client, "/v1/checkout/sessions", params, "key")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param and message in error["message"]
    assert not fake.sessions


def test_wrong_key_and_unknown_urls(fake: FakeStripe, client: httpx.Client) -> None:
    response = client.get(
        "/v1/subscriptions/x", headers={"authorization": "Bearer sk_test_wrongwrongwrong1234"}
    )
    assert response.status_code == 401
    assert (
        response.json()["error"]["message"] == "Invalid API Key provided: sk_test_************1234"
    )
    response = client.get("/v1/nothing")
    assert (
        response.status_code == 404
        and "Unrecognized request URL" in response.json()["error"]["message"]
    )


def test_idempotent_replays(fake: FakeStripe, client: httpx.Client) -> None:
    price = fake.create_price(unit_amount=100)
    first = post(client, "/v1/checkout/sessions", session_params(price), "same")
    again = post(client, "/v1/checkout/sessions", session_params(price), "same")
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert len(fake.sessions) == 1
    other = post(
        client, "/v1/checkout/sessions", session_params(price, client_reference_id="x"), "same"
    )
    assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"
    # A request that failed validation saves nothing: the key can be used again.
    bad = post(client, "/v1/checkout/sessions", {"mode": "subscription"}, "fresh")
    assert bad.status_code == 400
    assert post(client, "/v1/checkout/sessions", session_params(price), "fresh").status_code == 200
    assert len(fake.sessions) == 2


def test_faults_for_the_next_calls(fake: FakeStripe, client: httpx.Client) -> None:
    fake.fail_next(2, status=429, retry_after="3")
    fake.error_next(402)
    for _ in range(2):
        response = client.get("/v1/subscriptions/x")
        assert response.status_code == 429 and response.headers["retry-after"] == "3"
    declined = client.get("/v1/subscriptions/x")
    assert declined.status_code == 402 and declined.json()["error"]["code"] == "card_declined"
    assert client.get("/v1/subscriptions/x").status_code == 404


def test_meter_events_dedupe_on_identifier(fake: FakeStripe, client: httpx.Client) -> None:
    customer = fake.create_customer()
    params = {
        "event_name": "calls",
        "payload": {"stripe_customer_id": customer, "value": "2"},
        "identifier": "e1",
    }
    assert post(client, "/v1/billing/meter_events", params, "a").status_code == 200
    dupe = post(client, "/v1/billing/meter_events", params, "b")
    assert dupe.status_code == 400 and dupe.json()["error"]["param"] == "identifier"
    assert list(fake.meter_events) == ["e1"]


def test_deliveries_are_signed_like_stripe(fake: FakeStripe) -> None:
    fake.create_customer(email="a@b.c")
    [delivery] = fake.drain()
    assert fake.outbox == []
    assert delivery.type == "customer.created"
    assert json.loads(delivery.body)["id"] == delivery.event_id
    header = delivery.headers["stripe-signature"]
    assert header.startswith("t=") and ",v1=" in header
    assert verify_signature(delivery.body, header, fake.webhook_secret, datetime.now(UTC))
    stale = fake.delivery(delivery.event, timestamp=int(datetime.now(UTC).timestamp()) - 600)
    assert stale.body == delivery.body and stale.headers != delivery.headers


def test_events_are_ordered_by_created(fake: FakeStripe) -> None:
    for _ in range(5):
        fake.create_customer()
    created = [e["created"] for e in fake.events]
    assert created == sorted(created) and len(set(created)) == len(created)
