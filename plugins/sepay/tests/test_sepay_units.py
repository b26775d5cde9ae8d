"""The SePay plugin's parts on their own: references, transfer parsing, the API client."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from billing_gql import (
    BillingInterval,
    CheckoutRequest,
    CustomerInfo,
    EventKind,
    Money,
    PlanInfo,
    ProviderError,
    ProviderUnavailable,
    UserInputError,
    WebhookPayloadError,
    WebhookRequest,
    WebhookSignatureError,
)
from billing_gql_sepay.api import parse_page
from billing_gql_sepay.plugin import SePayProvider
from billing_gql_sepay.references import ALPHABET, ReferenceFormat
from billing_gql_sepay.testing import FakeSePay
from billing_gql_sepay.transfers import (
    parse_amount,
    parse_vietnam_time,
    transfer_from_api,
    transfer_from_webhook,
)
from conftest import provider_for

FMT = ReferenceFormat.build("bg", 8)
REF = "BGK7M2QX9A"


# -- references --------------------------------------------------------------------------------


def test_references_are_prefixed_unambiguous_and_random() -> None:
    made = {FMT.new() for _ in range(500)}
    assert len(made) == 500
    for ref in made:
        assert ref.startswith("BG") and len(ref) == 10
        assert set(ref[2:]) <= set(ALPHABET)
    assert not set("01OI") & set(ALPHABET)
    assert set(ALPHABET) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    # Every symbol shows up: the suffix uses the whole alphabet.
    assert set("".join(r[2:] for r in made)) == set(ALPHABET)


@pytest.mark.parametrize(
    ("prefix", "length"), [("B", 8), ("BILLNG", 8), ("B1", 8), ("BG", 5), ("BG", 31)]
)
def test_reference_settings_are_validated(prefix: str, length: int) -> None:
    with pytest.raises(ValueError, match="BILLING_GQL_SEPAY_REFERENCE"):
        ReferenceFormat.build(prefix, length)


@pytest.mark.parametrize(
    ("memo", "expected"),
    [
        (f"{REF} thanh toan", REF),
        (f"thanh toan don hang {REF.lower()}", REF),  # lower-cased by the banking app
        (f"MBVCB.3278907687.{REF}.CT tu 0359123123 NGUYEN VAN A", REF),
        (f"NGUYENVANACHUYENTIEN{REF}", REF),  # the bank stripped the spaces
        (f"CT{REF}THANHTOAN", REF),  # glued on both sides
        (f"IBFT {REF}-thanh toan", REF),
        ("BG K7M2-QX9A thanh toan", REF),  # split by the buyer
        (f"BGBG{REF[2:]} thanh toan", REF),  # prefix typed twice: the word-final candidate
        (f"chuyen tien BGHJK {REF}", REF),  # a shorter BG word does not hide the real one
        ("BGK7M2QX thanh toan", "BGK7M2QX"),  # a shorter (older) reference, a whole token
        ("thanh toan hoa don thang 6", None),
        ("BG01OI2345 thanh toan", None),  # look-alikes are never in a reference
        ("", None),
        (None, None),
    ],
)
def test_references_are_found_in_memos(memo: str | None, expected: str | None) -> None:
    assert FMT.find(memo) == expected


def test_reference_from_code_then_memo_then_code_as_given() -> None:
    assert FMT.from_transfer(REF.lower(), "no reference here") == REF
    assert FMT.from_transfer(None, f"{REF} thanh toan") == REF
    assert FMT.from_transfer("  ", None, f"BankAPINotify {REF}") == REF
    # A code of another payment-code structure is passed on (the core matches or keeps it).
    assert FMT.from_transfer("dh1042", "DH1042 thanh toan") == "DH1042"
    assert FMT.from_transfer(None, "tien nha", None) is None


# -- transfers ---------------------------------------------------------------------------------


def test_transaction_dates_are_vietnam_time() -> None:
    assert parse_vietnam_time("2025-06-01 14:18:18") == datetime(2025, 6, 1, 7, 18, 18, tzinfo=UTC)
    assert parse_vietnam_time("2025-06-01T00:30:00") == datetime(2025, 5, 31, 17, 30, tzinfo=UTC)
    assert parse_vietnam_time("2025-06-01T14:18:18+00:00") == datetime(
        2025, 6, 1, 14, 18, 18, tzinfo=UTC
    )
    assert parse_vietnam_time("yesterday") is None
    assert parse_vietnam_time(None) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(199000, 199000), ("199000", 199000), ("18067000.00", 18067000), (5e5, 500000),
     ("1,000", 1000), ("12.5", None), (True, None), (None, None), ("abc", None), ("NaN", None)],
)  # fmt: skip
def test_amounts_are_whole_dong(raw: object, expected: int | None) -> None:
    assert parse_amount(raw) == expected


def test_a_webhook_becomes_payment_received() -> None:
    fake = FakeSePay()
    txn = fake.transfer(199000, f"{REF} thanh toan", at=datetime(2025, 6, 1, 7, 18, 18, tzinfo=UTC))
    payload = json.loads(fake.delivery(txn).body)
    assert payload["transactionDate"] == "2025-06-01 14:18:18"
    assert payload["code"] == REF and isinstance(payload["id"], int)
    transfer = transfer_from_webhook(payload)
    event = transfer.event(FMT, datetime.now(UTC))
    assert event.kind == EventKind.PAYMENT_RECEIVED
    assert event.occurred_at == datetime(2025, 6, 1, 7, 18, 18, tzinfo=UTC)
    info = event.payment
    assert info is not None
    assert info.provider_ref == txn.reference_code and info.reference == REF
    assert info.amount == Money(199000, "VND")
    assert info.received_at == event.occurred_at
    assert info.details == {
        "gateway": "MBBank",
        "accountNumber": fake.account_number,
        "content": f"{REF} thanh toan",
        "transactionDate": "2025-06-01 14:18:18",
        "sepay_id": str(txn.id),
        "code": REF,
    }


def test_without_a_bank_reference_the_sepay_id_is_the_key() -> None:
    fake = FakeSePay()
    txn = fake.transfer(5000, "x", reference_code=None)
    assert transfer_from_webhook(txn.webhook_payload()).payment_ref == str(txn.id)
    # API v2 ids are UUIDs that no webhook carries: such a row has no safe key.
    assert transfer_from_api(txn.api_v2(False)) is not None
    assert transfer_from_api(txn.api_v2(False)).payment_ref is None  # type: ignore[union-attr]
    # API v1 ids are the webhook's.
    assert transfer_from_api(txn.api_v1()).payment_ref == str(txn.id)  # type: ignore[union-attr]


def test_api_rows_in_both_shapes_read_alike() -> None:
    fake = FakeSePay()
    txn = fake.transfer(18067000, f"DUONG THUY ANH {REF}")
    for row in (txn.api_v2(True), txn.api_v1()):
        transfer = transfer_from_api(row)
        assert transfer is not None
        assert (transfer.direction, transfer.amount) == ("in", 18067000)
        assert transfer.payment_ref == txn.reference_code
        assert transfer.to_account(fake.account_number)
        assert transfer.occurred_at == txn.at
    out = transfer_from_api(fake.transfer(1000, "rut tien", transfer_type="out").api_v1())
    assert out is not None and (out.direction, out.amount) == ("out", 1000)
    assert transfer_from_api({"amount_in": 5}) is None


def test_pages_in_v2_and_v1_shapes() -> None:
    v2 = parse_page(
        {"status": "success", "data": [{"id": "a"}], "meta": {"pagination": {"has_more": True}}}, 1
    )
    assert [r["id"] for r in v2.rows] == ["a"] and v2.has_more
    by_pages = parse_page(
        {"status": "success", "data": [{"id": "a"}], "meta": {"pagination": {"current_page": 2,
         "last_page": 2}}}, 2)  # fmt: skip
    assert not by_pages.has_more
    v1 = parse_page({"status": 200, "error": None, "transactions": [{"id": "1"}, "junk"]}, 1)
    assert [r["id"] for r in v1.rows] == ["1"] and not v1.has_more
    for bad in ([], {"status": "error", "message": "nope"}, {"status": "success"}, {"error": "x"}):
        with pytest.raises(ProviderError):
            parse_page(bad, 1)


# -- the provider ------------------------------------------------------------------------------


def checkout_request(currency: str = "VND", reference: str | None = REF) -> CheckoutRequest:
    return CheckoutRequest(
        checkout_id="c1",
        purpose="new",
        customer=CustomerInfo("u1", "ext", None, None, "VN"),
        plan=PlanInfo("p1", "pro", "Pro", BillingInterval.MONTH, 1, 0, None),
        amount=Money(199000 if currency == "VND" else 900, currency),
        quantity=1,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        idempotency_key="k",
        payment_reference=reference,
    )


async def test_checkout_instructions_and_qr(sepay: SePayProvider) -> None:
    assert sepay.payment_reference().startswith("BG")
    session = await sepay.create_checkout(checkout_request())
    bt = session.bank_transfer
    assert bt is not None and session.url is None
    assert (bt.bank_code, bt.account_number, bt.reference) == ("MBBank", "0359123123", REF)
    assert bt.account_name == "CONG TY TNHH BILLING GQL" and bt.amount == Money(199000, "VND")
    assert bt.qr_code_url == (
        "https://qr.sepay.vn/img?acc=0359123123&bank=MBBank&amount=199000&des=BGK7M2QX9A"
    )
    with pytest.raises(UserInputError) as caught:
        await sepay.create_checkout(checkout_request("USD"))
    assert caught.value.code == "UNSUPPORTED_CURRENCY"
    with pytest.raises(ProviderError):
        await sepay.create_checkout(checkout_request(reference=None))


async def test_qr_base_with_a_query_and_a_memo_needing_encoding(
    fake: FakeSePay, sleeps: list[float]
) -> None:
    provider = provider_for(fake, sleeps, QR_BASE="https://qr.example/img?template=compact")
    url = provider.qr_code_url(50000, "BG ABC&D")
    assert url == (
        "https://qr.example/img?template=compact&acc=0359123123&bank=MBBank&amount=50000"
        "&des=BG+ABC%26D"
    )
    await provider.aclose()


def test_class_flags() -> None:
    cls = SePayProvider
    assert (cls.bank_transfer, cls.hosted_checkout, cls.charges_renewals) == (True, False, False)
    assert cls.needs_provider_ref is False and tuple(cls.currencies or ()) == ("VND",)
    assert cls.webhook_ack == {"success": True}
    assert cls.capabilities() == {"checkout", "bank_transfer", "reconcile"}
    assert set(cls.secret_settings) == {"WEBHOOK_API_KEY", "API_TOKEN"}


def test_reconcile_interval_follows_the_token(fake: FakeSePay, sleeps: list[float]) -> None:
    assert provider_for(fake, sleeps).reconcile_interval() is not None
    with_minutes = provider_for(fake, sleeps, RECONCILE_MINUTES="5").reconcile_interval()
    assert with_minutes is not None and with_minutes.total_seconds() == 300
    no_token = provider_for(fake, sleeps)
    no_token.api = None
    assert no_token.reconcile_interval() is None
    with pytest.raises(ValueError, match="RECONCILE_MINUTES"):
        provider_for(fake, sleeps, RECONCILE_MINUTES="0")


def webhook(body: bytes, authorization: str | None) -> WebhookRequest:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    return WebhookRequest(headers, body, datetime.now(UTC))


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Apikey", "Apikey wrong-key", "Bearer sepay-webhook-key-5b1f0c9e7d",
     "sepay-webhook-key-5b1f0c9e7d", "Apikey sepay-webhook-key-5b1f0c9e7dX"],
)  # fmt: skip
def test_webhook_credentials_are_checked(sepay: SePayProvider, authorization: str | None) -> None:
    with pytest.raises(WebhookSignatureError):
        sepay.verify_webhook(webhook(b'{"id": 1}', authorization))


def test_webhook_envelope(sepay: SePayProvider, fake: FakeSePay) -> None:
    txn = fake.transfer(1000, "x", at=datetime(2025, 6, 1, 7, 0, tzinfo=UTC))
    delivery = fake.delivery(txn)
    envelope = sepay.verify_webhook(webhook(delivery.body, "apikey  sepay-webhook-key-5b1f0c9e7d"))
    assert envelope.event_id == str(txn.id) and envelope.event_type == "transfer.in"
    assert envelope.occurred_at == datetime(2025, 6, 1, 7, 0, tzinfo=UTC)
    assert envelope.keep_headers == {}
    for bad in (b"not json", b"[1]", b'{"id": null}', b'{"id": true}', b'{"id": " "}'):
        with pytest.raises(WebhookPayloadError):
            sepay.verify_webhook(webhook(bad, "Apikey sepay-webhook-key-5b1f0c9e7d"))


# -- the API client ----------------------------------------------------------------------------


async def test_api_pages_and_honours_rate_limits(
    sepay: SePayProvider, fake: FakeSePay, sleeps: list[float]
) -> None:
    for i in range(3):
        fake.transfer(1000 + i, f"memo {i}")
    fake.rate_limit(retry_after=2)
    fake.rate_limit(retry_after=3, header="x-sepay-userapi-retry-after")
    assert sepay.api is not None
    page = await sepay.api.transactions(date_from="2000-01-01 00:00:00", page=1, per_page=2)
    assert [r["amount_in"] for r in page.rows] == [1000, 1001] and page.has_more
    assert sleeps == [2.0, 3.0]
    page = await sepay.api.transactions(date_from="2000-01-01 00:00:00", page=2, per_page=2)
    assert [r["amount_in"] for r in page.rows] == [1002] and not page.has_more
    served = fake.requests[-1]
    assert served.headers["authorization"] == f"Bearer {fake.api_token}"
    assert served.url.params["transfer_type"] == "in"
    assert served.url.params["transaction_date_sort"] == "asc"


async def test_api_gives_up_on_long_or_endless_rate_limits(
    sepay: SePayProvider, fake: FakeSePay, sleeps: list[float]
) -> None:
    assert sepay.api is not None
    fake.rate_limit(retry_after=600)
    with pytest.raises(ProviderUnavailable, match="rate limit"):
        await sepay.api.transactions(date_from="2000-01-01 00:00:00", page=1)
    assert sleeps == []
    fake.rate_limit(times=10, retry_after=1)
    with pytest.raises(ProviderUnavailable):
        await sepay.api.transactions(date_from="2000-01-01 00:00:00", page=1)
    assert sleeps == [1.0] * (sepay.api.max_attempts - 1)


async def test_api_refusals_are_provider_errors_without_the_token(
    fake: FakeSePay, sleeps: list[float]
) -> None:
    provider = provider_for(fake, sleeps, API_TOKEN="not-the-token-123")
    assert provider.api is not None
    with pytest.raises(ProviderError) as caught:
        await provider.api.transactions(date_from="2000-01-01 00:00:00", page=1)
    assert caught.value.status == 401 and "not-the-token-123" not in caught.value.message
    assert "API_TOKEN" in caught.value.message
    await provider.aclose()
