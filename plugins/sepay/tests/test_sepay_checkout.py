"""SePay end to end through HTTP: routing, QR instructions, transfers matched by reference,
partial payments, retries, what must change nothing, unmatched money and its assignment."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sepay_helpers import (
    ASSIGN,
    CHECKOUT,
    PRICE,
    create_checkout,
    db_rows,
    deliver,
    deliveries,
    entitlements,
    get_checkout,
    iso,
    make_customer,
    make_plan,
    open_checkout,
    payments,
    qr_params,
    send,
    session_for,
    unmatched,
)

from billing_gql.testing import ApiClient, TestDatabase
from billing_gql_sepay.references import ALPHABET
from billing_gql_sepay.testing import FakeSePay

AT = datetime(2026, 11, 20, 3, 15, 0, tzinfo=UTC)  # 10:15 in Hanoi


async def test_a_vietnamese_customer_gets_qr_instructions_through_routing(
    api: ApiClient, fake: FakeSePay
) -> None:
    await make_plan(api)
    customer = await make_customer(api, country="VN", currency="VND")
    token = await session_for(api, customer)
    # The frontend asks with the customer's session; it names no provider: the routes do.
    payload = await create_checkout(api, token=token, customerId=customer, planCode="pro")
    assert payload["userErrors"] == []
    checkout = payload["checkout"]
    assert checkout["provider"] == "sepay" and checkout["status"] == "OPEN"
    assert checkout["url"] is None
    assert checkout["amount"] == {"amount": "199000", "currency": "VND"}
    assert checkout["amountPaid"] == {"amount": "0", "currency": "VND"}
    bt = checkout["bankTransfer"]
    reference = bt["reference"]
    assert reference.startswith("BG") and len(reference) == 10
    assert set(reference[2:]) <= set(ALPHABET)
    assert (bt["bankCode"], bt["accountNumber"]) == (fake.bank_code, fake.account_number)
    assert bt["accountName"] == fake.account_name
    assert bt["amount"] == {"amount": "199000", "currency": "VND"}
    assert bt["qrCodeUrl"].startswith("https://qr.sepay.vn/img?")
    assert qr_params(bt["qrCodeUrl"]) == {
        "acc": fake.account_number,
        "bank": fake.bank_code,
        "amount": "199000",
        "des": reference,
    }
    # A bank transfer stays open for a day (BILLING_GQL_CHECKOUT_TTL_MINUTES unset).
    created = datetime.now(UTC)
    assert timedelta(hours=23) < iso(checkout["expiresAt"]) - created <= timedelta(hours=24)
    # The customer reads it back with its own token.
    again = (await api.gql(CHECKOUT, {"id": checkout["id"]}, token=token)).ok()["checkout"]
    assert again["bankTransfer"] == bt
    # Each checkout has its own reference.
    second = await open_checkout(api, customer)
    assert second["bankTransfer"]["reference"] != reference
    providers = (await api.gql("{ providers { name configured currencies capabilities } }")).ok()
    assert {
        "name": "sepay",
        "configured": True,
        "currencies": ["VND"],
        "capabilities": ["bank_transfer", "checkout", "reconcile"],
    } in providers["providers"]


async def test_other_customers_and_currencies_route_elsewhere(api: ApiClient) -> None:
    await make_plan(api)
    us = await make_customer(api, "usr_us", country="US", currency="USD")
    checkout = (await create_checkout(api, customerId=us, planCode="pro"))["checkout"]
    assert checkout["provider"] == "manual" and checkout["bankTransfer"] is None
    # Not Vietnam, though paying in VND: the VN rule does not apply.
    de = await make_customer(api, "usr_de", country="DE")
    checkout = (await create_checkout(api, customerId=de, planCode="pro", currency="VND"))[
        "checkout"
    ]
    assert checkout["provider"] == "manual"
    # Vietnam in USD: SePay cannot take USD, so its rule is skipped.
    vn = await make_customer(api, "usr_vn_usd", country="VN")
    checkout = (await create_checkout(api, customerId=vn, planCode="pro", currency="USD"))[
        "checkout"
    ]
    assert checkout["provider"] == "manual"
    # Naming SePay for USD is the user error.
    payload = await create_checkout(
        api, customerId=vn, planCode="pro", currency="USD", provider="sepay"
    )
    assert payload["checkout"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
        ("UNSUPPORTED_CURRENCY", ["input", "currency"])
    ]


async def test_a_full_transfer_completes_the_checkout_and_activates_the_subscription(
    api: ApiClient, fake: FakeSePay
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    reference = checkout["bankTransfer"]["reference"]
    assert await entitlements(api, customer) == {}
    txn = await deliver(api, fake, PRICE, f"{reference} thanh toan", at=AT)
    done = await get_checkout(api, checkout["id"])
    assert done["status"] == "COMPLETED"
    assert done["amountPaid"] == {"amount": "199000", "currency": "VND"}
    sub = done["subscription"]
    assert sub["status"] == "ACTIVE" and sub["provider"] == "sepay" and sub["currency"] == "VND"
    assert sub["renewalCheckout"] is None
    granted = await entitlements(api, customer)
    assert granted["seats"] == {"feature": "seats", "enabled": True, "limit": "5"}
    assert granted["export"]["enabled"] is True
    [payment] = await payments(api, customer)
    assert payment["provider"] == "sepay" and payment["status"] == "succeeded"
    assert payment["providerRef"] == txn.reference_code and payment["reference"] == reference
    assert payment["amount"] == {"amount": "199000", "currency": "VND"}
    assert payment["checkout"] == {"id": checkout["id"], "status": "COMPLETED"}
    # transactionDate 10:15:00 in Hanoi is 03:15:00 UTC.
    assert iso(payment["receivedAt"]) == AT
    [delivery] = await deliveries(api)
    assert delivery == {
        "eventId": str(txn.id),
        "eventType": "transfer.in",
        "status": "applied",
        "attempts": 1,
        "error": None,
    }


async def test_a_partial_transfer_leaves_it_open_and_the_remainder_completes_it_once(
    api: ApiClient, fake: FakeSePay
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    reference = checkout["bankTransfer"]["reference"]
    first = await deliver(api, fake, 120_000, f"{reference} dot 1")
    partial = await get_checkout(api, checkout["id"])
    assert partial["status"] == "OPEN" and partial["subscription"] is None
    assert partial["amount"] == {"amount": "199000", "currency": "VND"}
    assert partial["amountPaid"] == {"amount": "120000", "currency": "VND"}
    # What remains is what the instructions (and the QR) now ask for.
    bt = partial["bankTransfer"]
    assert bt["amount"] == {"amount": "79000", "currency": "VND"}
    assert qr_params(bt["qrCodeUrl"]) == {
        "acc": fake.account_number,
        "bank": fake.bank_code,
        "amount": "79000",
        "des": reference,
    }
    assert bt["reference"] == reference
    assert await entitlements(api, customer) == {}
    # SePay retries the first transfer: it still counts once.
    assert (await send(api, fake.delivery(first))).status_code == 200
    assert (await get_checkout(api, checkout["id"]))["amountPaid"]["amount"] == "120000"

    second = await deliver(api, fake, 79_000, f"{reference} dot 2")
    done = await get_checkout(api, checkout["id"])
    assert done["status"] == "COMPLETED" and done["subscription"]["status"] == "ACTIVE"
    assert done["amountPaid"] == {"amount": "199000", "currency": "VND"}
    assert done["bankTransfer"]["amount"] == {"amount": "0", "currency": "VND"}
    for txn in (first, second):  # every retry later: nothing more
        assert (await send(api, fake.delivery(txn))).status_code == 200
    assert await get_checkout(api, checkout["id"]) == done
    paid = await payments(api, customer)
    assert sorted(p["providerRef"] for p in paid) == sorted(
        [first.reference_code, second.reference_code]
    )
    listed = await api.admin("{ subscriptions { edges { node { id } } } }")
    assert len(listed["subscriptions"]["edges"]) == 1


async def test_an_overpayment_completes_and_is_recorded(api: ApiClient, fake: FakeSePay) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    await deliver(api, fake, 250_000, f"{checkout['bankTransfer']['reference']}")
    done = await get_checkout(api, checkout["id"])
    assert done["status"] == "COMPLETED"
    assert done["amountPaid"] == {"amount": "250000", "currency": "VND"}
    [payment] = await payments(api, customer)
    assert payment["amount"]["amount"] == "250000"


async def test_retried_deliveries_count_once(
    api: ApiClient, fake: FakeSePay, clean_database: TestDatabase
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    txn = fake.transfer(50_000, f"{checkout['bankTransfer']['reference']} thanh toan")
    for _ in range(4):  # the first try and three of SePay's retries, same id and body
        response = await send(api, fake.delivery(txn))
        assert response.status_code == 200
        assert response.json() == {"ok": True, "success": True}
    assert (await get_checkout(api, checkout["id"]))["amountPaid"]["amount"] == "50000"
    assert len(await payments(api, customer)) == 1
    rows = await db_rows(clean_database.url, "SELECT event_id FROM webhook_deliveries")
    assert rows == [{"event_id": str(txn.id)}]


async def test_outgoing_transfers_other_accounts_and_wrong_keys_change_nothing(
    api: ApiClient, fake: FakeSePay, clean_database: TestDatabase
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    reference = checkout["bankTransfer"]["reference"]
    # Money leaving the account (a refund, a supplier) that mentions the reference.
    await deliver(api, fake, PRICE, f"hoan tien {reference}", transfer_type="out")
    # Money arriving on another account SePay watches for the same company.
    await deliver(api, fake, PRICE, f"{reference} thanh toan", account_number="1900123456")
    # Wrong or missing credentials: 401, nothing stored.
    good = fake.delivery(fake.pay(reference, PRICE))
    for bad in (
        fake.with_key(good, "not-the-key"),
        fake.with_key(good, None),
        fake.with_key(good, ""),
    ):
        response = await send(api, bad)
        assert response.status_code == 401, response.text
    bearer = {**fake.with_key(good, None).headers, "authorization": f"Bearer {fake.api_key}"}
    assert (await api.post_webhook("sepay", good.body, bearer)).status_code == 401

    after = await get_checkout(api, checkout["id"])
    assert after["status"] == "OPEN" and after["amountPaid"]["amount"] == "0"
    assert await payments(api) == [] and await unmatched(api) == []
    assert await entitlements(api, customer) == {}
    stored = sorted((d["eventType"], d["status"]) for d in await deliveries(api))
    assert stored == [("transfer.in", "ignored"), ("transfer.out", "ignored")]
    # The genuine delivery, correctly authenticated, is what counts.
    assert (await send(api, good)).status_code == 200
    assert (await get_checkout(api, checkout["id"]))["status"] == "COMPLETED"
    inbox = await db_rows(clean_database.url, "SELECT count(*) AS n FROM webhook_deliveries")
    assert inbox == [{"n": 3}]


async def test_a_transfer_to_a_sub_account_of_ours_counts(api: ApiClient, fake: FakeSePay) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    # A virtual account: SePay reports the VA as accountNumber and ours as subAccount.
    await deliver(
        api,
        fake,
        PRICE,
        f"{checkout['bankTransfer']['reference']}",
        account_number="VQRQABCD1234",
        sub_account=fake.account_number,
    )
    assert (await get_checkout(api, checkout["id"]))["status"] == "COMPLETED"


async def test_without_a_code_the_reference_is_found_in_the_memo(
    api: ApiClient, fake: FakeSePay
) -> None:
    await make_plan(api)
    memos = [
        "NGUYEN VAN A chuyen tien {ref} mua goi pro",
        "{lower} thanh toan",
        "MBVCB.3278907687.NGUYENVANACHUYENTIEN{ref}.CT tu 0359123123",
    ]
    for n, memo in enumerate(memos):
        # A customer each: one holds the plan once.
        customer = await make_customer(api, f"usr_vn{n}")
        checkout = await open_checkout(api, customer)
        reference = checkout["bankTransfer"]["reference"]
        content = memo.format(ref=reference, lower=reference.lower())
        txn = await deliver(api, fake, PRICE, content, code=None)
        assert json.loads(fake.delivery(txn).body)["code"] is None
        done = await get_checkout(api, checkout["id"])
        assert done["status"] == "COMPLETED", content


async def test_an_unmatched_transfer_is_kept_and_can_be_assigned(
    api: ApiClient, fake: FakeSePay
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    # The buyer forgot the reference; another typed one that does not exist.
    forgot = await deliver(api, fake, PRICE, "NGUYEN VAN A chuyen tien")
    await deliver(api, fake, 10_000, "BGZZZZZZZZ thanh toan")
    kept = await unmatched(api)
    assert {p["providerRef"] for p in kept} == {
        forgot.reference_code,
        fake.transactions[-1].reference_code,
    }
    assert all(p["status"] == "unmatched" and p["checkout"] is None for p in kept)
    by_ref = {p["providerRef"]: p for p in kept}
    assert by_ref[forgot.reference_code]["reference"] is None
    assert by_ref[fake.transactions[-1].reference_code]["reference"] == "BGZZZZZZZZ"
    assert (await get_checkout(api, checkout["id"]))["status"] == "OPEN"

    payment_id = by_ref[forgot.reference_code]["id"]
    assigned = await api.admin(ASSIGN, {"p": payment_id, "c": checkout["id"]})
    done = assigned["assignPayment"]["checkout"]
    assert done["status"] == "COMPLETED" and done["subscription"]["status"] == "ACTIVE"
    assert done["amountPaid"]["amount"] == "199000"
    assert [p["providerRef"] for p in await unmatched(api)] == [
        fake.transactions[-1].reference_code
    ]
    # Assigning twice is refused; a retry of the webhook changes nothing either.
    again = await api.gql(ASSIGN, {"p": payment_id, "c": checkout["id"]}, admin=True)
    assert [e["code"] for e in again.data["assignPayment"]["userErrors"]] == ["INVALID_STATE"]
    assert (await send(api, fake.delivery(forgot))).status_code == 200
    assert (await get_checkout(api, checkout["id"]))["amountPaid"]["amount"] == "199000"


async def test_money_for_an_expired_checkout_still_completes_it(
    api: ApiClient, fake: FakeSePay, clean_database: TestDatabase
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    await db_rows(
        clean_database.url,
        "UPDATE checkouts SET status = 'EXPIRED' WHERE id = $1::uuid",
        checkout["id"],
    )
    await deliver(api, fake, PRICE, f"{checkout['bankTransfer']['reference']} thanh toan")
    done = await get_checkout(api, checkout["id"])
    assert done["status"] == "COMPLETED" and done["subscription"]["status"] == "ACTIVE"


async def test_unreadable_deliveries(
    api: ApiClient, fake: FakeSePay, clean_database: TestDatabase
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    good = fake.delivery(fake.pay(checkout["bankTransfer"]["reference"], PRICE))
    # Authenticated but not JSON: 400, nothing stored.
    response = await api.post_webhook("sepay", b"{not json", dict(good.headers))
    assert response.status_code == 400
    assert await deliveries(api) == []
    # Money in with an amount nobody can read: stored as failed (visible, replayable),
    # never applied and never acknowledged as ignored.
    txn = fake.pay(checkout["bankTransfer"]["reference"], PRICE)
    response = await send(api, fake.delivery(txn, transferAmount="much"))
    assert response.status_code == 200
    [stored] = await deliveries(api)
    assert stored["status"] == "failed" and "transferAmount" in stored["error"]
    assert fake.api_key not in json.dumps(stored)
    assert (await get_checkout(api, checkout["id"]))["status"] == "OPEN"
