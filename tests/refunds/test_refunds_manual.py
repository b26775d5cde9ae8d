"""refundPayment for a provider that cannot send money back (the built-in ``manual``): the
operator's bank reference is recorded, partial refunds add up, an over-refund writes nothing,
revokeAccess ends the subscription now, concurrent whole-remainder requests refund once, and
``payment.refunded`` goes out once per refund."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
from billing_helpers import (
    START,
    SUBSCRIPTION,
    db_rows,
    make_customer,
    make_plan,
    runtime_for,
    session_for,
    subscribe,
)
from refund_helpers import PAYMENTS, REFUND, Recorder, codes, payments, refund

from billing_gql.errors import UserInputError
from billing_gql.refunds.service import RefundInput, RefundOutcome, refund_payment
from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import MakeApi

pytestmark = pytest.mark.usefixtures("clean_database")

BILLING = BillingSettings(manual_provider=True, test_clock=True)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def api(make_api: MakeApi, rows: Any, recorder: Recorder) -> AsyncIterator[ApiClient]:
    await rows.set_clock(START)
    async with make_api(plugins=[recorder], billing=BILLING) as client:
        yield client


async def paid(api: ApiClient) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A customer who bought Pro (30.00 USD) manually: (customer id, subscription, payment)."""
    await make_plan(api)
    customer = await make_customer(api, "usr_refund", currency="USD")
    sub = await subscribe(api, customer, currency="USD")
    [payment] = await payments(api, customer)
    assert payment["amount"] == {"amount": "30.00", "currency": "USD"}
    return customer, sub, payment


async def test_partial_refunds_add_up_and_an_over_refund_writes_nothing(
    api: ApiClient, clean_database: TestDatabase, recorder: Recorder
) -> None:
    customer, _, payment = await paid(api)
    first = await refund(
        api, paymentId=payment["id"], amount="10.00", reason="goodwill", reference="VCB-001"
    )
    assert first["userErrors"] == []
    assert first["refund"]["status"] == "succeeded"
    assert first["refund"]["origin"] == "API"
    assert first["refund"]["reference"] == "VCB-001"
    assert first["refund"]["creditNote"]["number"]
    assert first["refund"]["payment"]["status"] == "partially_refunded"
    assert first["refund"]["payment"]["amountRefunded"]["amount"] == "10.00"

    too_much = await refund(api, paymentId=payment["id"], amount="20.01", reference="VCB-002")
    assert codes(too_much) == ["REFUND_EXCEEDS_PAYMENT"]
    assert too_much["userErrors"][0]["field"] == ["input", "amount"]
    assert too_much["refund"] is None

    rest = await refund(api, paymentId=payment["id"], reference="VCB-003")  # the rest: 20.00
    assert rest["userErrors"] == []
    assert rest["refund"]["amount"] == {"amount": "20.00", "currency": "USD"}
    assert rest["refund"]["payment"]["status"] == "refunded"
    assert rest["refund"]["payment"]["amountRefunded"]["amount"] == "30.00"

    nothing_left = await refund(api, paymentId=payment["id"], reference="VCB-004")
    assert codes(nothing_left) == ["REFUND_EXCEEDS_PAYMENT"]

    [listed] = await payments(api, customer)
    assert [r["reference"] for r in listed["refunds"]] == ["VCB-001", "VCB-003"]
    rows = await db_rows(clean_database.url, "SELECT status, amount_minor FROM refunds")
    assert sorted((r["status"], r["amount_minor"]) for r in rows) == [
        ("succeeded", 1000),
        ("succeeded", 2000),
    ]
    [checkout] = await db_rows(clean_database.url, "SELECT refunded_minor FROM checkouts")
    assert checkout["refunded_minor"] == 3000
    refunded = recorder.of("payment.refunded")
    assert [e.data["refund"]["amount"]["amount"] for e in refunded] == ["10.00", "20.00"]
    assert refunded[-1].data["amount_refunded"] == {"amount": "30.00", "currency": "USD"}


CREDIT_NOTE = """query($id: ID!) { invoice(id: $id) { id number status isCreditNote
  total { amount currency } lines { kind amount { amount } } creditOf { id number } } }"""


async def test_each_refund_answers_its_own_numbered_credit_note(
    api: ApiClient, clean_database: TestDatabase, recorder: Recorder
) -> None:
    customer, _, payment = await paid(api)
    first = await refund(
        api, paymentId=payment["id"], amount="12.50", reference="VCB-11", idempotencyKey="k-11"
    )
    note = first["refund"]["creditNote"]
    assert note["number"]
    data = await api.admin(CREDIT_NOTE, {"id": note["id"]})
    invoice = data["invoice"]
    assert invoice["number"] == note["number"] and invoice["isCreditNote"] is True
    assert invoice["status"] == "PAID"
    assert invoice["total"] == {"amount": "-12.50", "currency": "USD"}
    assert [(x["kind"], x["amount"]["amount"]) for x in invoice["lines"]] == [("CREDIT", "-12.50")]
    # It credits the manual checkout's own (numbered) invoice.
    original = invoice["creditOf"]
    assert original is not None and original["number"] and original["number"] != note["number"]

    again = await refund(
        api, paymentId=payment["id"], amount="12.50", reference="VCB-11", idempotencyKey="k-11"
    )
    assert again["refund"]["creditNote"] == note
    rest = await refund(api, paymentId=payment["id"], reference="VCB-12")
    second = rest["refund"]["creditNote"]
    assert second["id"] != note["id"] and second["number"] != note["number"]
    data = await api.admin(CREDIT_NOTE, {"id": second["id"]})
    assert data["invoice"]["total"]["amount"] == "-17.50"

    rows = await db_rows(
        clean_database.url,
        "SELECT r.amount_minor, i.total_minor FROM refunds r "
        "JOIN invoices i ON i.id = r.credit_note_id ORDER BY r.amount_minor",
    )
    assert [(r["amount_minor"], r["total_minor"]) for r in rows] == [(1250, -1250), (1750, -1750)]
    notes = await db_rows(clean_database.url, "SELECT id FROM invoices WHERE kind = 'credit_note'")
    assert len(notes) == 2
    # The customer reads its credit notes through its refunds.
    token = await session_for(api, customer)
    mine = await api.gql(PAYMENTS, {"c": customer}, token=token)
    [seen] = mine.ok()["payments"]["nodes"]
    assert {r["creditNote"]["id"] for r in seen["refunds"]} == {note["id"], second["id"]}


async def test_a_payment_made_outside_needs_the_bank_reference(api: ApiClient) -> None:
    _, _, payment = await paid(api)
    missing = await refund(api, paymentId=payment["id"], amount="5.00")
    assert codes(missing) == ["INVALID_INPUT"]
    assert missing["userErrors"][0]["field"] == ["input", "reference"]
    bad = await refund(api, paymentId=payment["id"], amount="5.001", reference="X")
    assert codes(bad) == ["INVALID_AMOUNT"]
    zero = await refund(api, paymentId=payment["id"], amount="0", reference="X")
    assert codes(zero) == ["INVALID_AMOUNT"]
    unknown = await refund(api, paymentId="00000000-0000-0000-0000-000000000000", reference="X")
    assert codes(unknown) == ["NOT_FOUND"]
    not_an_id = await refund(api, paymentId="nope", reference="X")
    assert codes(not_an_id) == ["NOT_FOUND"]
    [after] = await payments(api)
    assert after["refunds"] == [] and after["status"] == "succeeded"


async def test_only_an_admin_refunds(api: ApiClient) -> None:
    customer, _, payment = await paid(api)
    token = await session_for(api, customer)
    result = await api.gql(
        REFUND, {"input": {"paymentId": payment["id"], "reference": "X"}}, token=token
    )
    assert result.error_codes == ["FORBIDDEN"]
    anonymous = await api.gql(REFUND, {"input": {"paymentId": payment["id"], "reference": "X"}})
    assert anonymous.error_codes == ["UNAUTHENTICATED"]
    done = await refund(api, paymentId=payment["id"], amount="1.00", reference="VCB-7")
    assert done["refund"]["reference"] == "VCB-7"
    # The customer sees its refund, without the operator's bank reference.
    mine = await api.gql(PAYMENTS, {"c": customer}, token=token)
    [seen] = mine.ok()["payments"]["nodes"]
    [made] = seen["refunds"]
    assert made["amount"]["amount"] == "1.00" and made["status"] == "succeeded"
    assert made["reference"] is None and made["providerRefundId"] is None


async def test_revoke_access_ends_the_subscription_now(api: ApiClient) -> None:
    _, sub, payment = await paid(api)
    done = await refund(
        api, paymentId=payment["id"], amount="15.00", reference="VCB-9", revokeAccess=True
    )
    assert done["userErrors"] == []
    after = (await api.admin(SUBSCRIPTION, {"id": sub["id"]}))["subscription"]
    assert after["status"] == "CANCELED"
    assert after["endedAt"] is not None


async def test_a_repeated_key_answers_the_first_refund(
    api: ApiClient, clean_database: TestDatabase, recorder: Recorder
) -> None:
    _, _, payment = await paid(api)
    args = {"paymentId": payment["id"], "amount": "5.00", "reference": "R1", "idempotencyKey": "k1"}
    first = await refund(api, **args)
    again = await refund(api, **args)
    assert again["userErrors"] == []
    assert again["refund"]["id"] == first["refund"]["id"]
    assert again["refund"]["payment"]["amountRefunded"]["amount"] == "5.00"
    assert len(await db_rows(clean_database.url, "SELECT id FROM refunds")) == 1
    assert len(recorder.of("payment.refunded")) == 1


async def test_concurrent_whole_remainder_requests_refund_once(
    api: ApiClient, clean_database: TestDatabase, recorder: Recorder, app_settings: Settings
) -> None:
    _, _, payment = await paid(api)
    request = RefundInput(payment_id=UUID(payment["id"]), reference="R")
    # A runtime in this event loop (as another process): its calls really run concurrently.
    async with runtime_for(app_settings, BILLING) as runtime:
        answers = await asyncio.gather(
            *(refund_payment(runtime, request) for _ in range(5)), return_exceptions=True
        )
    won = [a for a in answers if isinstance(a, RefundOutcome)]
    assert len(won) == 1 and won[0].refund.amount_minor == 3000
    lost = [a for a in answers if not isinstance(a, RefundOutcome)]
    assert all(isinstance(a, UserInputError) and a.code == "REFUND_EXCEEDS_PAYMENT" for a in lost)
    rows = await db_rows(clean_database.url, "SELECT amount_minor FROM refunds")
    assert [r["amount_minor"] for r in rows] == [3000]
    [after] = await payments(api)
    assert after["amountRefunded"]["amount"] == "30.00" and after["status"] == "refunded"


async def test_an_unmatched_payment_is_not_refundable(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    _, _, payment = await paid(api)
    await db_rows(
        clean_database.url,
        "UPDATE payments SET status = 'unmatched' WHERE id = $1::uuid",
        payment["id"],
    )
    refused = await refund(api, paymentId=payment["id"], reference="X")
    assert codes(refused) == ["PAYMENT_NOT_REFUNDABLE"]
    assert await db_rows(clean_database.url, "SELECT id FROM refunds") == []
