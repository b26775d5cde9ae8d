"""Auth of every id-taking engine operation: a customer token reaches only its own objects."""

from __future__ import annotations

from typing import Any

from billing_helpers import (
    CANCEL,
    CHANGE,
    CHECKOUT,
    COMPLETE_MANUAL,
    CREATE_CHECKOUT,
    PAUSE,
    PORTAL,
    RESUME,
    SUBSCRIPTION,
    checkout_ok,
    make_customer,
    make_plan,
    session_for,
    subscribe,
)

from billing_gql.testing import ApiClient

UNKNOWN = "00000000-0000-0000-0000-000000000000"


async def test_customer_tokens_reach_only_their_own_objects(api: ApiClient) -> None:
    await make_plan(api)
    await make_plan(api, "max")
    ann = await make_customer(api, "ann")
    bob = await make_customer(api, "bob")
    ann_sub = await subscribe(api, ann)
    bob_sub = await subscribe(api, bob)
    bob_open = await checkout_ok(api, customerId=bob, planCode="max", provider="manual")
    token = await session_for(api, ann)

    forbidden: list[tuple[str, dict[str, Any] | None]] = [
        (CHECKOUT, {"id": bob_open["id"]}),
        (CHECKOUT, {"id": UNKNOWN}),
        (SUBSCRIPTION, {"id": bob_sub["id"]}),
        (SUBSCRIPTION, {"id": "not-an-id"}),
        ("query($c: ID) { subscriptions(customerId: $c) { edges { cursor } } }", {"c": bob}),
        ('query($c: ID) { entitlement(customerId: $c, feature: "sso") { enabled } }', {"c": bob}),
        ('{ entitlement(externalCustomerId: "bob", feature: "sso") { enabled } }', None),
        ('{ entitlement(externalCustomerId: "nobody", feature: "sso") { enabled } }', None),
        ("query($c: ID) { entitlements(customerId: $c) { feature } }", {"c": bob}),
        ("query($c: ID) { payments(customerId: $c) { edges { cursor } } }", {"c": bob}),
        (CREATE_CHECKOUT, {"input": {"customerId": bob, "planCode": "pro", "provider": "manual"}}),
        (CREATE_CHECKOUT, {"input": {"customerId": UNKNOWN, "planCode": "pro"}}),
        (CANCEL, {"input": {"subscriptionId": bob_sub["id"]}}),
        (CANCEL, {"input": {"subscriptionId": UNKNOWN}}),
        (RESUME, {"id": bob_sub["id"]}),
        (PORTAL, {"id": bob}),
        # Admin only, even on its own objects:
        (PAUSE, {"id": ann_sub["id"]}),
        (CHANGE, {"input": {"subscriptionId": ann_sub["id"], "planCode": "max"}}),
        (COMPLETE_MANUAL, {"id": bob_open["id"]}),
        (
            "mutation($p: ID!, $c: ID!) { assignPayment(paymentId: $p, checkoutId: $c) "
            "{ checkout { id } } }",
            {"p": UNKNOWN, "c": bob_open["id"]},
        ),
        ("{ unmatchedPayments { edges { cursor } } }", None),
        ("{ webhookDeliveries { edges { cursor } } }", None),
        (
            "mutation($id: ID!) { replayWebhookDelivery(id: $id) { delivery { id } } }",
            {"id": UNKNOWN},
        ),
    ]
    for query, variables in forbidden:
        result = await api.gql(query, variables, token=token)
        assert result.status == 200, query
        assert result.error_codes == ["FORBIDDEN"], (query, result.body)
        assert all(value is None for value in (result.data or {}).values()), query

    # Its own objects work.
    own_checkout = (
        await api.gql(
            CREATE_CHECKOUT,
            {"input": {"customerId": ann, "planCode": "max", "provider": "manual"}},
            token=token,
        )
    ).ok()
    checkout_id = own_checkout["createCheckout"]["checkout"]["id"]
    assert (await api.gql(CHECKOUT, {"id": checkout_id}, token=token)).ok()["checkout"]
    assert (await api.gql(SUBSCRIPTION, {"id": ann_sub["id"]}, token=token)).ok()
    mine = (await api.gql("{ subscriptions { edges { node { id } } } }", token=token)).ok()
    assert [e["node"]["id"] for e in mine["subscriptions"]["edges"]] == [ann_sub["id"]]
    paid = (await api.gql("{ payments { edges { node { customer { id } } } } }", token=token)).ok()
    assert {e["node"]["customer"]["id"] for e in paid["payments"]["edges"]} == {ann}
    canceled = (
        await api.gql(CANCEL, {"input": {"subscriptionId": ann_sub["id"]}}, token=token)
    ).ok()
    assert canceled["cancelSubscription"]["subscription"]["cancelAtPeriodEnd"] is True
    assert (await api.gql(RESUME, {"id": ann_sub["id"]}, token=token)).ok()
    own = await api.gql(
        '{ entitlement(externalCustomerId: "ann", feature: "sso") { enabled } }', token=token
    )
    assert own.ok()["entitlement"]["enabled"] is True


async def test_no_token_is_unauthenticated(api: ApiClient) -> None:
    for query in [
        f'{{ checkout(id: "{UNKNOWN}") {{ id }} }}',
        '{ entitlement(externalCustomerId: "x", feature: "f") { enabled } }',
        "{ subscriptions { edges { cursor } } }",
        "{ payments { edges { cursor } } }",
    ]:
        result = await api.gql(query)
        assert result.error_codes == ["UNAUTHENTICATED"], query
