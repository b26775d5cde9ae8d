"""refundPayment through Polar, end to end: GraphQL → the plugin → the fake Polar's refunds
endpoint → its signed deliveries → each refund recorded once."""

from __future__ import annotations

from typing import Any

from polar_world import World, paid

ERRORS = "userErrors { field message code }"
FIELDS = """id status amount { amount } origin providerRefundId reason
  payment { id status amountRefunded { amount } }"""
REFUND = f"""mutation($i: RefundPaymentInput!) {{ refundPayment(input: $i) {{
  refund {{ {FIELDS} }} {ERRORS} }} }}"""
PAYMENTS = f"""query($c: ID!) {{ payments(customerId: $c) {{ nodes {{ id providerRef status
  amountRefunded {{ amount }} refunds {{ {FIELDS} }} }} }} }}"""


async def refund(w: World, **input: Any) -> dict[str, Any]:
    result = await w.api.gql(REFUND, {"i": input}, admin=True)
    assert result.status == 200 and not result.errors, result.body
    payload: dict[str, Any] = result.data["refundPayment"]
    return payload


async def payment(w: World) -> dict[str, Any]:
    data = await w.api.admin(PAYMENTS, {"c": w.customer})
    [found] = data["payments"]["nodes"]
    return dict(found)


def creations(w: World) -> list[Any]:
    return w.fake.requests_to("POST", "/v1/refunds")


async def test_a_polar_refund_reaches_polar_once_and_is_recorded_once(world: World) -> None:
    await paid(world)
    order = await payment(world)
    args = {"paymentId": order["id"], "amount": "10.00", "reason": "bug", "idempotencyKey": "p1"}
    first = await refund(world, **args)
    assert first["userErrors"] == []
    made = first["refund"]
    assert made["status"] == "succeeded" and made["amount"]["amount"] == "10.00"
    assert made["payment"]["status"] == "partially_refunded"
    again = await refund(world, **args)
    assert again["refund"]["id"] == made["id"]
    [call] = creations(world)
    assert call.json == {
        "order_id": order["providerRef"],
        "reason": "other",
        "amount": 1000,
        "metadata": {"billing_gql_refund_id": made["id"]},
        "comment": "bug",
    }
    [at_polar] = world.fake.refunds.values()
    assert made["providerRefundId"] == at_polar["id"]
    # Polar's deliveries (refund.created, order.refunded …), twice: counted once.
    deliveries = world.fake.drain()
    assert {"refund.created", "order.refunded"} <= {d.type for d in deliveries}
    await world.post_all(deliveries + deliveries)
    after = await payment(world)
    assert after["amountRefunded"]["amount"] == "10.00"
    assert [r["id"] for r in after["refunds"]] == [made["id"]]

    over = await refund(world, paymentId=order["id"], amount="19.01")
    assert [e["code"] for e in over["userErrors"]] == ["REFUND_EXCEEDS_PAYMENT"]
    assert len(creations(world)) == 1


async def test_a_pending_polar_refund_completes_by_webhook(world: World) -> None:
    await paid(world)
    order = await payment(world)
    world.fake.settle_refunds = False
    pending = await refund(world, paymentId=order["id"])
    assert pending["userErrors"] == []
    assert pending["refund"]["status"] == "pending"
    assert pending["refund"]["payment"]["amountRefunded"]["amount"] == "0.00"
    # While it is pending its amount is held: nothing more can be refunded.
    held = await refund(world, paymentId=order["id"], amount="1.00")
    assert [e["code"] for e in held["userErrors"]] == ["REFUND_EXCEEDS_PAYMENT"]
    await world.post_all(world.fake.drain())  # refund.created (pending): nothing changes
    assert (await payment(world))["amountRefunded"]["amount"] == "0.00"
    world.fake.settle_refund(pending["refund"]["providerRefundId"])
    await world.post_all(world.fake.drain())
    after = await payment(world)
    assert after["status"] == "refunded" and after["amountRefunded"]["amount"] == "29.00"
    [done] = after["refunds"]
    assert done["id"] == pending["refund"]["id"] and done["status"] == "succeeded"


async def test_a_failed_pending_refund_releases_its_amount(world: World) -> None:
    await paid(world)
    order = await payment(world)
    world.fake.settle_refunds = False
    pending = await refund(world, paymentId=order["id"], amount="20.00")
    world.fake.settle_refund(pending["refund"]["providerRefundId"], succeeded=False)
    await world.post_all(world.fake.drain())
    after = await payment(world)
    assert [r["status"] for r in after["refunds"]] == ["failed"]
    assert after["amountRefunded"]["amount"] == "0.00" and after["status"] == "succeeded"
    world.fake.settle_refunds = True
    whole = await refund(world, paymentId=order["id"])
    assert whole["refund"]["amount"]["amount"] == "29.00"


async def test_a_dashboard_refund_is_recorded_once(world: World) -> None:
    await paid(world)
    order = await payment(world)
    world.fake.refund(order["providerRef"], 700)
    deliveries = world.fake.drain()
    await world.post_all(list(reversed(deliveries)) + deliveries)
    after = await payment(world)
    [made] = after["refunds"]
    assert made["origin"] == "PROVIDER" and made["amount"]["amount"] == "7.00"
    assert after["amountRefunded"]["amount"] == "7.00"
