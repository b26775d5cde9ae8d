"""The AcmePay-Signature check, through the provider's ``verify_webhook`` (what the core calls)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from billing_gql import WebhookPayloadError, WebhookRequest, WebhookSignatureError
from billing_gql_acmepay.plugin import AcmePayProvider
from billing_gql_acmepay.testing import FakeAcmePay
from billing_gql_acmepay.webhooks import compute_signature, signature_headers

BODY = json.dumps(
    {
        "id": "evt_1",
        "object": "event",
        "type": "customer.created",
        "created_at": "2031-01-02T03:04:05.123456Z",
        "data": {"id": "cus_1"},
    }
).encode()


def request(body: bytes, headers: dict[str, str], at: datetime | None = None) -> WebhookRequest:
    return WebhookRequest(headers, body, at or datetime.now(UTC))


def test_a_delivery_signed_by_the_fake_verifies(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    envelope = acmepay.verify_webhook(request(BODY, fake.sign(BODY)))
    assert envelope.event_id == "evt_1"
    assert envelope.event_type == "customer.created"
    assert envelope.occurred_at == datetime(2031, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert envelope.keep_headers == {}  # nothing parse_webhook needs, and never credentials


def test_the_fake_and_the_plugin_compute_the_same_documented_signature(
    fake: FakeAcmePay,
) -> None:
    # The README's scheme by hand: hex HMAC-SHA256 of "<t>." + body, keyed by the secret.
    import hashlib
    import hmac

    by_hand = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert compute_signature("s3cret", 1700000000, BODY) == by_hand
    assert fake.sign(BODY, timestamp=1700000000, secret="s3cret") == {
        "acmepay-timestamp": "1700000000",
        "acmepay-signature": f"v1={by_hand}",
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"acmepay-timestamp": "1700000000"},
        {"acmepay-signature": "v1=00"},
        {"acmepay-timestamp": "soon", "acmepay-signature": "v1=00"},
        {"acmepay-timestamp": "1700000000", "acmepay-signature": "v0=00 sha1=11"},
    ],
    ids=["none", "no-signature", "no-timestamp", "bad-timestamp", "no-v1"],
)
def test_missing_or_malformed_headers_are_refused(
    acmepay: AcmePayProvider, headers: dict[str, str]
) -> None:
    with pytest.raises(WebhookSignatureError):
        acmepay.verify_webhook(request(BODY, headers))


def test_a_wrong_secret_or_a_changed_body_is_refused_without_saying_what_was_expected(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    stamp = int(time.time())
    expected = compute_signature(fake.webhook_secret, stamp, BODY)
    for body, headers in [
        (BODY, fake.sign(BODY, timestamp=stamp, secret="whsec_other")),
        (BODY + b" ", fake.sign(BODY, timestamp=stamp)),
        (BODY.replace(b"evt_1", b"evt_2"), fake.sign(BODY, timestamp=stamp)),
    ]:
        with pytest.raises(WebhookSignatureError) as info:
            acmepay.verify_webhook(request(body, headers))
        assert expected not in str(info.value) and fake.webhook_secret not in str(info.value)


def test_the_timestamp_must_be_within_300_seconds_either_way(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    now = datetime.now(UTC)
    stamp = int(now.timestamp())
    for offset in (-299, 0, 299):
        at = now + timedelta(seconds=offset)
        assert acmepay.verify_webhook(request(BODY, fake.sign(BODY, timestamp=stamp), at))
    for offset in (-301, 301, 86400):
        at = now + timedelta(seconds=offset)
        with pytest.raises(WebhookSignatureError, match="tolerance"):
            acmepay.verify_webhook(request(BODY, fake.sign(BODY, timestamp=stamp), at))


def test_any_of_several_signatures_may_match_during_a_secret_rotation(
    acmepay: AcmePayProvider, fake: FakeAcmePay
) -> None:
    stamp = int(time.time())
    both = signature_headers(["whsec_old", fake.webhook_secret], BODY, stamp)
    assert both["acmepay-signature"].count("v1=") == 2
    assert acmepay.verify_webhook(request(BODY, both)).event_id == "evt_1"
    only_old = signature_headers(["whsec_old"], BODY, stamp)
    with pytest.raises(WebhookSignatureError):
        acmepay.verify_webhook(request(BODY, only_old))


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"type": "customer.created"}', b'{"id": "e", "created_at": 5}'],
    ids=["not-json", "not-an-object", "no-id", "bad-time"],
)
def test_a_correctly_signed_but_unreadable_body_is_a_payload_error(
    acmepay: AcmePayProvider, fake: FakeAcmePay, body: bytes
) -> None:
    with pytest.raises(WebhookPayloadError):
        acmepay.verify_webhook(request(body, fake.sign(body)))


def test_an_unsigned_unreadable_body_is_a_signature_error_first(acmepay: AcmePayProvider) -> None:
    # Nothing is read before the signature is checked: no 400 oracle for strangers.
    with pytest.raises(WebhookSignatureError):
        acmepay.verify_webhook(request(b"not json", {}))
