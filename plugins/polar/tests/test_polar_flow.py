"""End to end: GraphQL → the fake Polar → its signed deliveries → /webhooks/polar → state."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from openapi_core import OpenAPI
from polar_helpers import validate_calls, validate_request
from polar_world import (
    CANCEL,
    CHANGE,
    CREATE_PLAN,
    DELIVERIES,
    FEATURES,
    PORTAL,
    PROVIDERS,
    RESUME,
    World,
    as_polar,
    entitled,
    forge_completion,
    make_plan,
    open_checkout,
    paid,
)
from standardwebhooks import Webhook


async def test_polar_is_registered_with_its_capabilities(world: World) -> None:
    providers = (await world.api.gql(PROVIDERS)).ok()["providers"]
    [polar] = [p for p in providers if p["name"] == "polar"]
    assert polar["configured"] and polar["displayName"] == "Polar"
    assert set(polar["capabilities"]) == {
        "checkout",
        "hosted_checkout",
        "recurring",
        "refund",
        "cancel",
        "resume",
        "change_plan",
        "portal",
        "usage",
        "reconcile",
    }


async def test_checkout_through_graphql_reaches_polar_with_a_schema_valid_body(
    world: World, openapi: OpenAPI
) -> None:
    payload = await open_checkout(world)
    assert payload["userErrors"] == []
    checkout = payload["checkout"]
    polar_checkout = world.fake.checkout_for(checkout["id"])
    assert checkout["status"] == "OPEN" and checkout["url"] == polar_checkout["url"]
    [call] = world.fake.requests_to("POST", "/v1/checkouts/")
    validate_request(openapi, call)
    assert call.json["products"] == [world.product]
    assert call.json["external_customer_id"] == "usr_42"
    assert call.json["customer_email"] == "ann@example.com"
    assert call.json["success_url"] == "https://app.example/thanks?checkout_id={CHECKOUT_ID}"
    assert call.json["metadata"] == {
        "billing_gql_checkout_id": checkout["id"],
        "billing_gql_customer_id": world.customer,
    }


async def test_polars_deliveries_make_the_subscription_active_with_entitlements(
    world: World,
) -> None:
    checkout, deliveries = await paid(world)
    polar_sub = world.fake.subscription_for(checkout["id"])
    assert checkout["status"] == "COMPLETED"
    assert checkout["amountPaid"] == checkout["amount"] == {"amount": "29.00", "currency": "USD"}
    sub = checkout["subscription"]
    assert sub["status"] == "ACTIVE" and sub["provider"] == "polar"
    assert sub["providerSubscriptionId"] == polar_sub["id"]
    assert sub["plan"]["code"] == "pro" and sub["currency"] == "USD"
    assert datetime.fromisoformat(sub["currentPeriodEnd"]) == datetime.fromisoformat(
        polar_sub["current_period_end"]
    )
    state = await world.state()
    [order] = [d for d in deliveries if d.type == "order.paid"]
    assert state["payments"] == [
        {
            "providerRef": order.data["id"],
            "status": "succeeded",
            "amount": {"amount": "29.00", "currency": "USD"},
        }
    ]
    ents = state["entitlements"]
    assert ents["seats"]["enabled"] and ents["seats"]["limit"] == "5"
    assert ents["export"]["enabled"]
    # The Polar benefit's metadata grants a feature of ours, with its limit.
    assert ents["api_calls"]["enabled"] and ents["api_calls"]["limit"] == "1000"
    statuses = {(r["event_type"], r["status"]) for r in await world.inbox()}
    assert ("customer.created", "ignored") in statuses
    assert ("order.paid", "applied") in statuses
    # The order is Polar's invoice: mirrored with its number and amounts, on the subscription.
    data = await world.api.admin(
        """query($c: ID!) { invoices(customerId: $c) { nodes { number status provider
             providerInvoiceId total { amount currency } amountPaid { amount }
             subscription { id } lines { kind amount { amount } } } } }""",
        {"c": world.customer},
    )
    assert data["invoices"]["nodes"] == [
        {
            "number": order.data["invoice_number"],
            "status": "PAID",
            "provider": "polar",
            "providerInvoiceId": order.data["id"],
            "total": {"amount": "29.00", "currency": "USD"},
            "amountPaid": {"amount": "29.00"},
            "subscription": {"id": sub["id"]},
            "lines": [{"kind": "PLAN", "amount": {"amount": "29.00"}}],
        }
    ]


async def test_a_trial_checkout(world: World) -> None:
    trial = world.fake.create_product(name="Trial", prices={"usd": 2900})
    await world.api.admin(
        CREATE_PLAN,
        {
            "input": {
                "code": "trial",
                "name": "Trial",
                "interval": "MONTH",
                "trialDays": 14,
                "prices": [{"currency": "USD", "amount": "29.00"}],
                "features": FEATURES,
                "providerRefs": [{"provider": "polar", "ref": trial}],
            }
        },
    )
    payload = await open_checkout(world, "trial")
    world.fake.pay(world.fake.checkout_for(payload["checkout"]["id"])["id"])
    await world.post_all(world.fake.drain())
    checkout = await world.checkout(payload["checkout"]["id"])
    sub = checkout["subscription"]
    assert checkout["status"] == "COMPLETED" and sub["status"] == "TRIALING"
    assert sub["trialEnd"] is not None and checkout["amountPaid"]["amount"] == "0.00"
    assert entitled(await world.state(), "seats")


async def test_redeliveries_with_one_webhook_id_are_one_effect(world: World) -> None:
    checkout, deliveries = await paid(world)
    before = await world.state()
    inbox = await world.inbox()
    world.fake.advance(30)
    for delivery in reversed(deliveries):  # Polar retries: same id, new timestamp and signature
        again = world.fake.redeliver(delivery)
        assert again.headers["webhook-timestamp"] != delivery.headers["webhook-timestamp"]
        assert await world.post(again) == 200
    assert await world.state() == before
    assert await world.checkout(checkout["id"]) == checkout
    assert await world.inbox() == inbox
    assert len(before["subscriptions"]) == 1 and len(before["payments"]) == 1


async def test_deliveries_signed_by_the_reference_library_as_polar_signs(world: World) -> None:
    payload = await open_checkout(world)
    world.fake.pay(world.fake.checkout_for(payload["checkout"]["id"])["id"])
    deliveries = world.fake.drain()
    polar_way, wrong_way = as_polar(world.fake.webhook_secret), Webhook(world.fake.webhook_secret)
    now = datetime.now(UTC)
    for delivery in deliveries:
        headers = {
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        wrong = wrong_way.sign(delivery.webhook_id, now, delivery.body.decode())
        assert await world.post(delivery, {**headers, "webhook-signature": wrong}) == 401
    assert await world.inbox() == []
    assert (await world.checkout(payload["checkout"]["id"]))["status"] == "OPEN"
    for delivery in deliveries:
        headers = {
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        good = polar_way.sign(delivery.webhook_id, now, delivery.body.decode())
        assert await world.post(delivery, {**headers, "webhook-signature": good}) == 200
    assert (await world.checkout(payload["checkout"]["id"]))["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "variant", ["tampered", "stale", "from_the_future", "wrongly_decoded_secret", "unsigned"]
)
async def test_bad_signatures_get_401_and_change_nothing(world: World, variant: str) -> None:
    payload = await open_checkout(world)
    world.fake.pay(world.fake.checkout_for(payload["checkout"]["id"])["id"])
    deliveries = world.fake.drain()
    now = int(time.time())
    for delivery in deliveries:
        body, headers = delivery.body, dict(delivery.headers)
        if variant == "tampered":
            body = body.replace(b'"status":"succeeded"', b'"status":"succeeded" ')
            body = body + b" " if body == delivery.body else body
        elif variant == "stale":
            headers = world.fake.sign_headers(body, delivery.webhook_id, timestamp=now - 301)
        elif variant == "from_the_future":
            # Beyond the 300 s tolerance with slack: on a loaded machine seconds pass before
            # the delivery is verified.
            headers = world.fake.sign_headers(body, delivery.webhook_id, timestamp=now + 330)
        elif variant == "wrongly_decoded_secret":
            moment = datetime.fromtimestamp(now, UTC)
            headers["webhook-signature"] = Webhook(world.fake.webhook_secret).sign(
                delivery.webhook_id, moment, body.decode()
            )
            headers["webhook-timestamp"] = str(now)
        else:
            headers = {"content-type": "application/json"}
        response = await world.api.post_webhook("polar", body, headers)
        assert response.status_code == 401, (variant, delivery.type)
        assert "whsec_" not in response.text
    assert await world.inbox() == []
    checkout = await world.checkout(payload["checkout"]["id"])
    assert checkout["status"] == "OPEN" and checkout["subscription"] is None
    state = await world.state()
    assert state["subscriptions"] == [] and state["payments"] == []
    assert not any(e["enabled"] for e in state["entitlements"].values())


async def test_revocation_removes_access(world: World) -> None:
    checkout, _ = await paid(world)
    sub = world.fake.subscription_for(checkout["id"])
    world.fake.revoke(sub["id"])  # e.g. refunded and revoked in Polar's dashboard
    deliveries = world.fake.drain()
    assert [d.type for d in deliveries] == [
        "subscription.updated",
        "subscription.canceled",
        "subscription.revoked",
        "benefit_grant.revoked",
        "customer.state_changed",
    ]
    await world.post_all(deliveries)
    state = await world.state()
    [only] = state["subscriptions"]
    assert only["status"] == "CANCELED" and only["canceledAt"] is not None
    assert not any(e["enabled"] for e in state["entitlements"].values()), state["entitlements"]


async def test_a_revoked_benefit_takes_only_its_feature(world: World) -> None:
    checkout, _ = await paid(world)
    [grant] = world.fake.grants_of(world.fake.subscription_for(checkout["id"])["id"])
    world.fake.revoke_grant(grant["id"])
    await world.post_all(world.fake.drain())
    state = await world.state()
    assert not entitled(state, "api_calls")
    assert entitled(state, "seats") and entitled(state, "export")


async def test_an_older_delivery_never_overwrites_newer_state(world: World) -> None:
    checkout, _ = await paid(world)
    sub_id = world.fake.subscription_for(checkout["id"])["id"]
    world.fake.cancel(sub_id, at_period_end=True)
    older = world.fake.drain()
    world.fake.revoke(sub_id)
    newer = world.fake.drain()
    await world.post_all(newer)
    await world.post_all(older)  # retried late: a pending cancel, older than the revocation
    [only] = (await world.state())["subscriptions"]
    assert only["status"] == "CANCELED" and only["cancelAtPeriodEnd"] is False


async def test_operations_reach_polar_with_exactly_one_body_shape(
    world: World, openapi: OpenAPI
) -> None:
    checkout, _ = await paid(world)
    sub_id = checkout["subscription"]["id"]
    polar_id = checkout["subscription"]["providerSubscriptionId"]
    team = world.fake.create_product(name="Team", prices={"usd": 9900})
    await make_plan(world, "team", team, "99.00")
    path = f"/v1/subscriptions/{polar_id}"
    world.fake.calls.clear()

    data = await world.api.admin(CANCEL, {"id": sub_id, "end": True})
    assert data["cancelSubscription"]["subscription"]["cancelAtPeriodEnd"] is True
    await world.post_all(world.fake.drain())
    state = await world.state()
    assert state["subscriptions"][0]["cancelAtPeriodEnd"] is True
    assert entitled(state, "seats") and entitled(state, "api_calls")  # paid until the end

    data = await world.api.admin(RESUME, {"id": sub_id})
    assert data["resumeSubscription"]["subscription"]["cancelAtPeriodEnd"] is False
    await world.post_all(world.fake.drain())

    data = await world.api.admin(CHANGE, {"input": {"subscriptionId": sub_id, "planCode": "team"}})
    assert data["changeSubscriptionPlan"]["subscription"]["plan"]["code"] == "team"
    await world.post_all(world.fake.drain())
    data = await world.api.admin(
        CHANGE, {"input": {"subscriptionId": sub_id, "planCode": "pro", "proration": "NONE"}}
    )
    moved = data["changeSubscriptionPlan"]["subscription"]
    assert moved["plan"]["code"] == "team" and moved["pendingPlan"]["code"] == "pro"
    await world.post_all(world.fake.drain())

    data = await world.api.admin(PORTAL, {"c": world.customer, "r": "https://app.example/me"})
    [session] = world.fake.sessions.values()
    assert data["createPortalSession"]["url"] == session["customer_portal_url"]

    data = await world.api.admin(CANCEL, {"id": sub_id, "end": False})
    assert data["cancelSubscription"]["subscription"]["status"] == "CANCELED"
    await world.post_all(world.fake.drain())
    state = await world.state()
    assert state["subscriptions"][0]["status"] == "CANCELED"
    assert not any(e["enabled"] for e in state["entitlements"].values())

    assert [(c.method, c.path, c.json) for c in world.fake.calls] == [
        ("PATCH", path, {"cancel_at_period_end": True}),
        ("GET", path, None),
        ("PATCH", path, {"cancel_at_period_end": False}),
        ("PATCH", path, {"product_id": team, "proration_behavior": "prorate"}),
        ("PATCH", path, {"product_id": world.product, "proration_behavior": "next_period"}),
        (
            "POST",
            "/v1/customer-sessions/",
            {"external_customer_id": "usr_42", "return_url": "https://app.example/me"},
        ),
        ("DELETE", path, None),
    ]
    assert validate_calls(openapi, world.fake.calls) == 7


async def test_polar_refusals_are_user_errors(world: World) -> None:
    await make_plan(world, "ghost", "6f2b7d1e-3c4a-4b5d-8e9f-0a1b2c3d4e5f")
    payload = await open_checkout(world, "ghost")
    assert payload["userErrors"] == [
        {
            "field": ["input", "products", "0"],  # Polar's path, under our argument
            "message": "Polar rejected the request: products.0: Product does not exist.",
            "code": "PROVIDER_ERROR",
        }
    ]
    world.fake.fail_next(10, status=429, retry_after="0")
    payload = await open_checkout(world)
    [error] = payload["userErrors"]
    assert error["code"] == "PROVIDER_UNAVAILABLE" and "429" in error["message"]
    world.fake.clear_faults()
    checkout, _ = await paid(world)
    world.fake.error_next(
        409, {"error": "SubscriptionLocked", "detail": "Subscription is pending an update."}
    )
    result = await world.api.gql(
        CANCEL, {"id": checkout["subscription"]["id"], "end": True}, admin=True
    )
    [error] = result.data["cancelSubscription"]["userErrors"]
    assert error["code"] == "PROVIDER_ERROR"
    assert error["message"] == "Polar: Subscription is pending an update."
    assert (await world.state())["subscriptions"][0]["cancelAtPeriodEnd"] is False


@pytest.mark.parametrize(
    "event_type", ["subscription.cycled", "customer.updated", "member.created"]
)
async def test_signed_events_of_other_types_are_accepted_and_ignored(
    world: World, event_type: str
) -> None:
    world.fake.emit(event_type, {"id": "5b0d7c3e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"})
    [delivery] = world.fake.drain()
    response = await world.api.post_webhook("polar", delivery.body, delivery.headers)
    assert response.status_code == 200 and response.json() == {"ok": True}
    edges = (await world.api.admin(DELIVERIES))["webhookDeliveries"]["edges"]
    assert [e["node"] for e in edges] == [
        {
            "eventId": delivery.webhook_id,
            "eventType": event_type,
            "status": "ignored",
            "attempts": 1,
            "error": None,
        }
    ]


# -- ordering: Polar's clock, not ours ---------------------------------------------------------


async def test_changes_delivered_in_reverse_end_in_polars_state(world: World) -> None:
    checkout, _ = await paid(world)
    polar_id = checkout["subscription"]["providerSubscriptionId"]
    world.fake.cancel(polar_id, at_period_end=True)
    world.fake.pause(polar_id)
    deliveries = world.fake.drain()
    await world.post_all(list(reversed(deliveries)))
    [state] = (await world.state())["subscriptions"]
    assert state["status"] == "PAUSED" and state["cancelAtPeriodEnd"] is True


@pytest.mark.parametrize("skew", [-200, 200])
async def test_our_cancel_then_polars_deliveries_stay_consistent(world: World, skew: int) -> None:
    """Polar's clock ``skew`` seconds off ours (within its signature tolerance)."""
    world.fake.advance(skew)
    checkout, _ = await paid(world)
    sub_id = checkout["subscription"]["id"]
    polar_id = checkout["subscription"]["providerSubscriptionId"]
    data = await world.api.admin(CANCEL, {"id": sub_id, "end": True})
    assert data["cancelSubscription"]["subscription"]["cancelAtPeriodEnd"] is True
    await world.post_all(world.fake.drain())  # Polar's own deliveries about that cancel
    [state] = (await world.state())["subscriptions"]
    assert state["cancelAtPeriodEnd"] is True and state["status"] == "ACTIVE"
    world.fake.pause(polar_id)  # a later change at Polar applies, whatever our clock says
    await world.post_all(world.fake.drain())
    [state] = (await world.state())["subscriptions"]
    assert state["status"] == "PAUSED"


@pytest.mark.parametrize("skew", [-200, 200])
async def test_an_old_delivery_in_flight_after_our_operation_does_not_regress(
    world: World, skew: int
) -> None:
    world.fake.advance(skew)
    checkout, _ = await paid(world)
    sub_id = checkout["subscription"]["id"]
    polar_id = checkout["subscription"]["providerSubscriptionId"]
    world.fake.cancel(polar_id, at_period_end=True)  # by the customer, at Polar
    in_flight = world.fake.drain()  # not delivered yet
    await world.api.admin(CANCEL, {"id": sub_id, "end": True})
    data = await world.api.admin(RESUME, {"id": sub_id})
    assert data["resumeSubscription"]["subscription"]["cancelAtPeriodEnd"] is False
    await world.post_all(in_flight)  # the older cancel arrives late, before the rest
    [state] = (await world.state())["subscriptions"]
    assert state["cancelAtPeriodEnd"] is False and state["status"] == "ACTIVE"
    await world.post_all(world.fake.drain())  # Polar's deliveries about our cancel and resume
    [state] = (await world.state())["subscriptions"]
    assert state["cancelAtPeriodEnd"] is False and state["status"] == "ACTIVE"
    assert world.fake.subscriptions[polar_id]["cancel_at_period_end"] is False


async def test_polars_validation_path_names_the_field_of_a_subscription_operation(
    world: World,
) -> None:
    checkout, _ = await paid(world)
    sub_id = checkout["subscription"]["id"]
    refusal = {"loc": ["body", "cancel_at_period_end"], "msg": "Cannot cancel now.", "type": "x"}
    world.fake.error_next(422, {"detail": [refusal]})
    result = await world.api.gql(CANCEL, {"id": sub_id, "end": True}, admin=True)
    assert result.data["cancelSubscription"]["userErrors"] == [
        {
            "field": ["input", "cancel_at_period_end"],
            "message": "Polar rejected the request: cancel_at_period_end: Cannot cancel now.",
            "code": "PROVIDER_ERROR",
        }
    ]
    # Without a path, the error is the argument's.
    world.fake.error_next(422, {"detail": [{"loc": ["body"], "msg": "Invalid.", "type": "x"}]})
    result = await world.api.gql(CANCEL, {"id": sub_id, "end": True}, admin=True)
    [error] = result.data["cancelSubscription"]["userErrors"]
    assert error["field"] == ["input"] and error["code"] == "PROVIDER_ERROR"
    assert (await world.state())["subscriptions"][0]["cancelAtPeriodEnd"] is False


UNMATCHED = """query { unmatchedPayments(provider: "polar") { nodes {
  providerRef unmatchedReason amount { amount currency } claimedCheckout { id } } } }"""


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("other_session", "PROVIDER_CHECKOUT_MISMATCH"),
        ("underpaid", "AMOUNT_TOO_LOW"),
        ("other_currency", "CURRENCY_MISMATCH"),
    ],
)
async def test_a_completion_that_is_not_our_checkouts_payment_completes_nothing(
    world: World, variant: str, reason: str
) -> None:
    """Issue #11 for Polar: a signed ``order.paid`` and ``checkout.updated`` (succeeded)
    carrying our checkout id in metadata complete it only when they are about the Polar
    checkout we created and pay its price (before tax) in its currency."""
    big = world.fake.create_product(name="Big", prices={"usd": 50000})
    await make_plan(world, "big", big, price="500.00")
    payload = await open_checkout(world, "big")
    ours = payload["checkout"]
    deliveries = forge_completion(world.fake, ours["id"], variant)
    assert sorted(d.type for d in deliveries) == ["checkout.updated", "order.paid"]
    await world.post_all(deliveries)
    after = await world.checkout(ours["id"])
    assert after["status"] == "OPEN" and after["subscription"] is None
    state = await world.state()
    assert state["subscriptions"] == [] and state["payments"] == []
    assert not entitled(state, "seats")
    kept = (await world.api.admin(UNMATCHED))["unmatchedPayments"]["nodes"]
    [order] = [d for d in deliveries if d.type == "order.paid"]
    assert order.data["id"] in {k["providerRef"] for k in kept}
    assert {k["unmatchedReason"] for k in kept} == {reason}
    assert all(k["claimedCheckout"] == {"id": ours["id"]} for k in kept)
