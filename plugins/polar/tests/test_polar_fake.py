"""The fake Polar itself: it answers, refuses and delivers in Polar's published shapes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from openapi_core import OpenAPI
from polar_helpers import (
    request_errors,
    validate_calls,
    validate_deliveries,
    validate_response,
)

from billing_gql_polar.testing import FakePolar, load_spec

SPEC = Path(os.environ.get("POLAR_OPENAPI_SPEC", "/work/shared/specs/polar-openapi-2026-10.json"))


def client(fake: FakePolar, token: str | None = None) -> httpx.Client:
    return httpx.Client(
        transport=fake.transport(),
        base_url="https://sandbox-api.polar.sh",
        headers={"authorization": f"Bearer {token or fake.access_token}"},
    )


def busy_fake() -> tuple[FakePolar, httpx.Client]:
    """A fake that went through every endpoint and every kind of delivery."""
    fake = FakePolar()
    flag = fake.create_benefit(description="API", metadata={"feature": "api", "limit": 10})
    note = fake.create_benefit(
        description="Support", metadata={"feature": "support"}, type="custom"
    )
    pro = fake.create_product(name="Pro", prices={"usd": 2900, "eur": 2700}, benefits=[flag, note])
    team = fake.create_product(name="Team", prices={"usd": 9900, "eur": 8900})
    once = fake.create_product(name="Once", prices={"usd": 500}, recurring_interval=None)
    http = client(fake)
    meta = {"billing_gql_checkout_id": "c1", "billing_gql_customer_id": "u"}
    checkout = http.post(
        "/v1/checkouts/",
        json={
            "products": [pro],
            "external_customer_id": "usr_1",
            "customer_email": "ann@example.com",
            "currency": "eur",
            "metadata": meta,
            "trial_interval": "day",
            "trial_interval_count": 7,
        },
    ).json()
    fake.pay(checkout["id"])
    sub_id = fake.checkouts[checkout["id"]]["subscription_id"]
    http.get(f"/v1/checkouts/{checkout['id']}")
    http.patch(f"/v1/subscriptions/{sub_id}", json={"cancel_at_period_end": True})
    http.patch(f"/v1/subscriptions/{sub_id}", json={"cancel_at_period_end": False})
    http.patch(
        f"/v1/subscriptions/{sub_id}", json={"product_id": team, "proration_behavior": "invoice"}
    )
    http.patch(
        f"/v1/subscriptions/{sub_id}", json={"product_id": pro, "proration_behavior": "next_period"}
    )
    fake.renew(sub_id)
    fake.past_due(sub_id)
    one = http.post("/v1/checkouts/", json={"products": [once], "external_customer_id": "usr_1"})
    order = fake.pay(one.json()["id"])
    fake.refund(order["id"])
    http.post("/v1/customer-sessions/", json={"external_customer_id": "usr_1"})
    customer_id = fake.checkouts[checkout["id"]]["customer_id"]
    http.post(
        "/v1/customer-sessions/", json={"customer_id": customer_id, "return_url": "https://a.b/"}
    )
    http.post(
        "/v1/events/ingest",
        json={"events": [{"name": "api", "external_customer_id": "usr_1", "external_id": "e1"}]},
    )
    http.get("/v1/customers/external/usr_1/state")
    http.get(f"/v1/customers/{customer_id}/state")
    http.get(f"/v1/subscriptions/{sub_id}")
    http.delete(f"/v1/subscriptions/{sub_id}")
    meter = fake.create_meter(name="API calls", event_name="api")
    metered = fake.create_product(
        name="Metered", prices={"usd": 900}, metered=[("usd", meter, "1.5")]
    )
    http.get(f"/v1/products/{metered}")
    http.get(f"/v1/meters/{meter}")
    # Refusals have Polar's shapes too.
    http.patch(f"/v1/subscriptions/{sub_id}", json={"cancel_at_period_end": True, "revoke": True})
    http.get("/v1/subscriptions/6a3e1f0c-8a7b-4c2d-9e1f-0a1b2c3d4e5f")
    http.post("/v1/checkouts/", json={"external_customer_id": "usr_1"})
    return fake, http


def test_every_answer_and_every_delivery_matches_polars_schema(openapi: OpenAPI) -> None:
    fake, _ = busy_fake()
    accepted = [c for c in fake.calls if c.status < 400]
    assert validate_calls(openapi, accepted) == len(accepted) == 16
    refused = [c for c in fake.calls if c.status >= 400]
    assert sorted(c.status for c in refused) == [404, 422, 422]
    for call in refused:
        validate_response(openapi, call)
        # openapi-core agrees that what the fake refused with a 422 does not validate.
        assert bool(request_errors(openapi, call)) == (call.status == 422)
    deliveries = fake.drain()
    kinds = {d.type for d in deliveries}
    assert kinds >= {
        "checkout.created",
        "checkout.updated",
        "customer.created",
        "customer.state_changed",
        "order.created",
        "order.updated",
        "order.paid",
        "order.refunded",
        "subscription.created",
        "subscription.updated",
        "subscription.canceled",
        "subscription.uncanceled",
        "subscription.cycled",
        "subscription.past_due",
        "subscription.revoked",
        "benefit_grant.created",
        "benefit_grant.cycled",
        "benefit_grant.revoked",
    }
    assert validate_deliveries(openapi, deliveries) == len(deliveries)


def test_bodies_that_do_not_validate_get_polars_422() -> None:
    fake, http = busy_fake()
    sub_id = next(iter(fake.subscriptions))
    mixed = http.patch(f"/v1/subscriptions/{sub_id}", json={"cancel_at_period_end": True, "x": 1})
    assert mixed.status_code == 422
    assert {
        "loc": ["body", "x"],
        "msg": "Extra inputs are not permitted",
        "type": "extra_forbidden",
    } in mixed.json()["detail"]
    no_products = http.post("/v1/checkouts/", json={"external_customer_id": "usr_1"})
    assert no_products.status_code == 422
    assert no_products.json() == {
        "detail": [{"loc": ["body", "products"], "msg": "Field required", "type": "missing"}]
    }
    bad_url = http.post(
        "/v1/checkouts/",
        json={"products": [next(iter(fake.products))], "success_url": "not a url"},
    )
    assert bad_url.status_code == 422 and bad_url.json()["detail"][0]["loc"] == [
        "body",
        "success_url",
    ]


def test_auth_faults_and_dedupe() -> None:
    fake = FakePolar()
    assert client(fake, "polar_oat_wrong").get("/v1/subscriptions/x").status_code == 401
    http = client(fake)
    fake.fail_next(1, status=429, retry_after="7")
    limited = http.post("/v1/events/ingest", json={"events": []})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    event = {"name": "api", "external_customer_id": "usr_1", "external_id": "e1"}
    assert http.post("/v1/events/ingest", json={"events": [event]}).json() == {
        "inserted": 1,
        "duplicates": 0,
    }
    assert http.post("/v1/events/ingest", json={"events": [event, event]}).json() == {
        "inserted": 0,
        "duplicates": 2,
    }
    assert http.get("/v1/nothing/here").status_code == 404


def test_it_refuses_a_repeated_cancel_as_polar_does(openapi: OpenAPI) -> None:
    fake, http = busy_fake()
    live = fake.create_product(name="Live", prices={"usd": 100})
    checkout = http.post(
        "/v1/checkouts/", json={"products": [live], "external_customer_id": "usr_2"}
    ).json()
    fake.pay(checkout["id"])
    sub = f"/v1/subscriptions/{fake.checkouts[checkout['id']]['subscription_id']}"
    other = next(p for p in fake.products if p != live and fake.products[p]["is_recurring"])
    fake.calls.clear()
    assert http.patch(sub, json={"cancel_at_period_end": False}).status_code == 400
    assert http.patch(sub, json={"cancel_at_period_end": True}).status_code == 200
    again = http.patch(sub, json={"cancel_at_period_end": True})
    assert again.status_code == 403 and again.json()["error"] == "AlreadyCanceledSubscription"
    change = http.patch(sub, json={"product_id": other, "proration_behavior": "prorate"})
    assert change.status_code == 403 and change.json()["error"] == "AlreadyCanceledSubscription"
    assert http.patch(sub, json={"cancel_at_period_end": False}).status_code == 200
    assert http.delete(sub).status_code == 200
    assert http.delete(sub).status_code == 403
    assert http.patch(sub, json={"revoke": True}).status_code == 403
    assert http.patch(sub, json={"cancel_at_period_end": True}).status_code == 403
    assert http.patch(sub, json={"cancel_at_period_end": False}).status_code == 410
    for call in fake.calls:
        if call.status in (200, 403):  # the 400 and 410 are Polar's, undocumented in its spec
            validate_response(openapi, call)


def test_a_failure_after_the_call_was_carried_out_leaves_the_change_made() -> None:
    fake, http = busy_fake()
    product = fake.create_product(name="Live", prices={"usd": 100})
    checkout = http.post(
        "/v1/checkouts/", json={"products": [product], "external_customer_id": "usr_2"}
    ).json()
    fake.pay(checkout["id"])
    sub_id = fake.checkouts[checkout["id"]]["subscription_id"]
    fake.fail_next(1, status=502, retry_after=None, applied=True)
    lost = http.patch(f"/v1/subscriptions/{sub_id}", json={"cancel_at_period_end": True})
    assert lost.status_code == 502
    assert fake.subscriptions[sub_id]["cancel_at_period_end"] is True
    fake.fail_next(1, status=502, retry_after=None)  # not carried out
    assert http.delete(f"/v1/subscriptions/{sub_id}").status_code == 502
    assert fake.subscriptions[sub_id]["status"] == "active"


def test_redelivery_keeps_the_id_and_body_and_signs_anew() -> None:
    fake = FakePolar()
    fake.create_customer(external_id="usr_1", email="a@example.com")
    [first] = fake.drain()
    fake.advance(90)
    again = fake.redeliver(first)
    assert again.webhook_id == first.webhook_id and again.body == first.body
    assert int(again.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"]) + 90
    assert again.headers["webhook-signature"] != first.headers["webhook-signature"]
    assert json.loads(again.body)["type"] == "customer.created"


def test_the_shipped_schema_is_the_published_one_trimmed() -> None:
    if not SPEC.exists():
        pytest.skip(f"the full Polar OpenAPI document is not at {SPEC}")
    import importlib.util

    script = Path(__file__).parents[1] / "scripts" / "trim_openapi.py"
    spec = importlib.util.spec_from_file_location("trim_openapi", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    published = json.loads(SPEC.read_text("utf-8"))
    assert module.trim(published) == load_spec()
