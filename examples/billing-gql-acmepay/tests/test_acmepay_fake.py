"""The fake AcmePay keeps the documented API's promises (the plugin's tests rely on them)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from billing_gql_acmepay.testing import FakeAcmePay


@pytest.fixture
async def client(fake: FakeAcmePay) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=fake.transport(),
        base_url=fake.api_base,
        headers={"authorization": f"Bearer {fake.api_key}"},
    ) as http:
        yield http


async def post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], key: str | None = "k1"
) -> httpx.Response:
    headers = {"idempotency-key": key} if key else {}
    return await client.post(path, json=body, headers=headers)


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_the_api_key_is_checked(fake: FakeAcmePay) -> None:
    async with httpx.AsyncClient(transport=fake.transport(), base_url=fake.api_base) as http:
        response = await http.get("/v1/subscriptions/sub_x")
    assert response.status_code == 401 and error_code(response) == "unauthorized"
    assert fake.requests == []


async def test_posts_need_an_idempotency_key_which_replays_or_conflicts(
    fake: FakeAcmePay, client: httpx.AsyncClient
) -> None:
    price = fake.create_price("29.00", "USD")
    missing = await post(client, "/v1/checkouts", {"price": price}, key=None)
    assert missing.status_code == 400 and error_code(missing) == "idempotency_key_required"
    first = await post(client, "/v1/checkouts", {"price": price})
    again = await post(client, "/v1/checkouts", {"price": price})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = await post(client, "/v1/checkouts", {"price": price, "quantity": 2})
    assert other.status_code == 409 and error_code(other) == "idempotency_conflict"
    assert len(fake.checkouts) == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"price": "price_missing"}, "resource_missing"),
        ({"price": "{price}", "colour": "red"}, "unknown_parameter"),
        ({"price": "{price}", "quantity": 0}, "parameter_invalid"),
        ({"price": "{price}", "metadata": {"k": 1}}, "parameter_invalid"),
        ({"price": "{price}", "expires_at": "2000-01-01T00:00:00Z"}, "parameter_invalid"),
        ({"price": "{price}", "success_url": "javascript:alert(1)"}, "parameter_invalid"),
        ({"price": "{once}", "trial_days": 7}, "parameter_invalid"),
    ],
    ids=["price", "unknown", "quantity", "metadata", "expiry", "url", "trial-once"],
)
async def test_checkout_parameters_are_validated(
    fake: FakeAcmePay, client: httpx.AsyncClient, body: dict[str, Any], code: str
) -> None:
    price = fake.create_price("29.00", "USD")
    once = fake.create_price("29.00", "USD", interval=None)
    filled = json.loads(json.dumps(body).replace("{price}", price).replace("{once}", once))
    response = await post(client, "/v1/checkouts", filled)
    assert response.status_code in (400, 404) and error_code(response) == code
    assert fake.checkouts == {}


async def test_faults_answer_before_anything_happens(
    fake: FakeAcmePay, client: httpx.AsyncClient
) -> None:
    price = fake.create_price("29.00", "USD")
    fake.fail_next(1, status=429, retry_after=3)
    limited = await post(client, "/v1/checkouts", {"price": price})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    fake.error_next(402, code="account_inactive", message="No.")
    refused = await post(client, "/v1/checkouts", {"price": price}, key="k2")
    assert refused.json() == {"error": {"code": "account_inactive", "message": "No."}}
    assert fake.checkouts == {}
    # A fault is not remembered under the key: the same request then succeeds.
    assert (await post(client, "/v1/checkouts", {"price": price})).status_code == 200


async def test_paying_queues_the_events_in_order_with_our_metadata_everywhere(
    fake: FakeAcmePay, client: httpx.AsyncClient
) -> None:
    price = fake.create_price("12.50", "EUR")
    created = await post(
        client,
        "/v1/checkouts",
        {"price": price, "quantity": 2, "customer_email": "a@b.c", "metadata": {"ours": "1"}},
    )
    checkout = created.json()
    assert checkout["amount"] == "25.00" and checkout["currency"] == "EUR"
    fake.pay(checkout["id"])
    deliveries = fake.drain()
    assert [d.type for d in deliveries] == [
        "customer.created",
        "subscription.created",
        "payment.succeeded",
        "checkout.paid",
    ]
    times = [d.event["created_at"] for d in deliveries]
    assert times == sorted(times) and len(set(times)) == len(times)
    paid = deliveries[-1].event["data"]
    assert paid["subscription"]["metadata"] == paid["payment"]["metadata"] == {"ours": "1"}
    assert paid["payment"]["amount"] == "25.00" and paid["payment"]["checkout"] == checkout["id"]
    for delivery in deliveries:
        assert delivery.headers == {
            **delivery.headers,
            **fake.sign(delivery.body, timestamp=int(delivery.headers["acmepay-timestamp"])),
        }
    assert fake.drain() == []


async def test_cancel_and_resume_through_the_api(
    fake: FakeAcmePay, client: httpx.AsyncClient
) -> None:
    price = fake.create_price("29.00", "USD")
    checkout = (await post(client, "/v1/checkouts", {"price": price})).json()
    fake.pay(checkout["id"])
    fake.drain()
    sub_id = fake.checkouts[checkout["id"]]["subscription"]
    path = f"/v1/subscriptions/{sub_id}"
    bad = await post(client, f"{path}/cancel", {"at_period_end": "yes"}, key="c0")
    assert bad.status_code == 400
    pending = await post(client, f"{path}/cancel", {"at_period_end": True}, key="c1")
    assert pending.json()["cancel_at_period_end"] is True
    resumed = await post(client, f"{path}/resume", {}, key="r1")
    assert resumed.json()["cancel_at_period_end"] is False
    ended = await post(client, f"{path}/cancel", {"at_period_end": False}, key="c2")
    assert ended.json()["status"] == "canceled"
    again = await post(client, f"{path}/resume", {}, key="r2")
    assert again.status_code == 400 and error_code(again) == "subscription_canceled"
    assert [d.type for d in fake.drain()] == [
        "subscription.updated",
        "subscription.updated",
        "subscription.canceled",
    ]
    missing = await client.get("/v1/subscriptions/sub_nope")
    assert missing.status_code == 404 and error_code(missing) == "resource_missing"
