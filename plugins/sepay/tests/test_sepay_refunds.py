"""refundPayment of a SePay bank transfer: SePay cannot send money back, so the operator makes
the transfer and records it with its bank reference; partial refunds add up, never past what
was paid, and the subscription's access can end at once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sepay_helpers import PRICE, deliver, get_checkout, make_customer, make_plan, open_checkout

from billing_gql.testing import ApiClient
from billing_gql_sepay.testing import FakeSePay

AT = datetime(2026, 11, 20, 3, 15, 0, tzinfo=UTC)
FIELDS = """id status amount { amount currency } reference origin
  payment { id status amountRefunded { amount currency } }"""
REFUND = f"""mutation($i: RefundPaymentInput!) {{ refundPayment(input: $i) {{
  refund {{ {FIELDS} }} userErrors {{ field message code }} }} }}"""
PAYMENTS = f"""query($c: ID!) {{ payments(customerId: $c) {{ nodes {{ id status
  amountRefunded {{ amount }} refunds {{ {FIELDS} }} }} }} }}"""


async def refund(api: ApiClient, **input: Any) -> dict[str, Any]:
    result = await api.gql(REFUND, {"i": input}, admin=True)
    assert result.status == 200 and not result.errors, result.body
    payload: dict[str, Any] = result.data["refundPayment"]
    return payload


async def test_a_transfer_is_refunded_by_the_operator_with_its_bank_reference(
    api: ApiClient, fake: FakeSePay
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    await deliver(api, fake, PRICE, f"{checkout['bankTransfer']['reference']} thanh toan", at=AT)
    done = await get_checkout(api, checkout["id"])
    sub = done["subscription"]
    [payment] = (await api.admin(PAYMENTS, {"c": customer}))["payments"]["nodes"]
    calls = len(fake.requests)

    without = await refund(api, paymentId=payment["id"], amount="50000")
    assert [(e["code"], e["field"]) for e in without["userErrors"]] == [
        ("INVALID_INPUT", ["input", "reference"])
    ]
    decimals = await refund(api, paymentId=payment["id"], amount="0.5", reference="FT1")
    assert [e["code"] for e in decimals["userErrors"]] == ["INVALID_AMOUNT"]

    part = await refund(api, paymentId=payment["id"], amount="50000", reference="FT26001")
    assert part["userErrors"] == []
    assert part["refund"]["status"] == "succeeded" and part["refund"]["reference"] == "FT26001"
    assert part["refund"]["amount"] == {"amount": "50000", "currency": "VND"}
    assert part["refund"]["payment"]["status"] == "partially_refunded"
    over = await refund(api, paymentId=payment["id"], amount="149001", reference="FT26002")
    assert [e["code"] for e in over["userErrors"]] == ["REFUND_EXCEEDS_PAYMENT"]
    rest = await refund(api, paymentId=payment["id"], reference="FT26003", revokeAccess=True)
    assert rest["userErrors"] == []
    assert rest["refund"]["amount"]["amount"] == "149000"
    assert rest["refund"]["payment"] == {
        "id": payment["id"],
        "status": "refunded",
        "amountRefunded": {"amount": "199000", "currency": "VND"},
    }
    [after] = (await api.admin(PAYMENTS, {"c": customer}))["payments"]["nodes"]
    assert [r["reference"] for r in after["refunds"]] == ["FT26001", "FT26003"]
    ended = await get_checkout(api, checkout["id"])
    assert ended["subscription"]["id"] == sub["id"]
    assert ended["subscription"]["status"] == "CANCELED"
    assert len(fake.requests) == calls  # no money moved through SePay's API
