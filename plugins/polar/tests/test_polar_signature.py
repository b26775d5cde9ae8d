"""Polar's Standard Webhooks signature: checked against the reference library, both ways."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from billing_gql import WebhookPayloadError, WebhookRequest, WebhookSignatureError
from billing_gql_polar.testing import FakePolar
from billing_gql_polar.webhooks import read_envelope, sign, verify_signature

SECRET = FakePolar().webhook_secret
BODY = json.dumps(
    {"type": "subscription.active", "timestamp": "2026-11-22T10:00:00Z", "data": {"id": "x"}}
).encode()
MSG_ID = "6f1c2a0e-7c34-4b7e-9a51-0c6b9d3f2e11"


def as_polar(secret: str) -> Webhook:
    """The reference library keyed the way Polar's server keys it: ``base64(secret)``, which
    the library decodes back to the raw string's bytes."""
    return Webhook(base64.b64encode(secret.encode()).decode())


def headers_at(moment: datetime, signature: str, msg_id: str = MSG_ID) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }


def library_signature(webhook: Webhook, moment: datetime, body: bytes = BODY) -> str:
    return webhook.sign(MSG_ID, moment, body.decode())


def test_our_signature_is_the_reference_librarys_keyed_as_polar_keys_it() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    ours = sign(SECRET, MSG_ID, int(now.timestamp()), BODY)
    assert ours == library_signature(as_polar(SECRET), now)
    assert ours.startswith("v1,")


def test_a_delivery_signed_by_the_reference_library_is_accepted() -> None:
    now = datetime.now(UTC)
    headers = headers_at(now, library_signature(as_polar(SECRET), now))
    assert verify_signature(headers, BODY, SECRET, now) == (MSG_ID, int(now.timestamp()))


def test_the_fakes_deliveries_verify_with_the_reference_library() -> None:
    fake = FakePolar()
    fake.create_customer(external_id="usr_1", email="a@example.com")
    [delivery] = fake.drain()
    assert delivery.type == "customer.created"
    payload = as_polar(fake.webhook_secret).verify(delivery.body, delivery.headers)
    assert payload == json.loads(delivery.body)
    assert set(delivery.headers) >= {"webhook-id", "webhook-timestamp", "webhook-signature"}


def test_the_secret_wrongly_base64_decoded_signs_something_else_and_is_rejected() -> None:
    now = datetime.now(UTC)
    # Webhook(secret) strips "whsec_" and base64-decodes the rest: not Polar's key.
    wrong = library_signature(Webhook(SECRET), now)
    assert wrong != library_signature(as_polar(SECRET), now)
    with pytest.raises(WebhookSignatureError):
        verify_signature(headers_at(now, wrong), BODY, SECRET, now)
    # And the other way round: a verifier keyed that way rejects Polar's real signature.
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(
            BODY, headers_at(now, sign(SECRET, MSG_ID, int(now.timestamp()), BODY))
        )


def test_any_one_of_several_signatures_may_match() -> None:
    now = datetime.now(UTC)
    good = sign(SECRET, MSG_ID, int(now.timestamp()), BODY)
    other = sign("whsec_rotatedAwaySecret000000000000", MSG_ID, int(now.timestamp()), BODY)
    for header in (f"{other} {good}", f"{good} {other}", f"v1a,{good[3:]} {good}"):
        assert verify_signature(headers_at(now, header), BODY, SECRET, now)[0] == MSG_ID
    with pytest.raises(WebhookSignatureError):
        verify_signature(headers_at(now, other), BODY, SECRET, now)
    with pytest.raises(WebhookSignatureError, match="no v1"):
        verify_signature(headers_at(now, f"v1a,{good[3:]}"), BODY, SECRET, now)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-301, False), (-299, True), (0, True), (299, True), (301, False)],
    ids=["stale", "old-but-fresh", "now", "ahead-within", "ahead-too-far"],
)
def test_five_minutes_tolerance_both_ways(offset: int, accepted: bool) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    signed_at = now + timedelta(seconds=offset)
    headers = headers_at(signed_at, sign(SECRET, MSG_ID, int(signed_at.timestamp()), BODY))
    if accepted:
        verify_signature(headers, BODY, SECRET, now)
    else:
        with pytest.raises(WebhookSignatureError, match="tolerance"):
            verify_signature(headers, BODY, SECRET, now)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_rejected(missing: str) -> None:
    now = datetime.now(UTC)
    headers = headers_at(now, sign(SECRET, MSG_ID, int(now.timestamp()), BODY))
    del headers[missing]
    with pytest.raises(WebhookSignatureError, match="missing"):
        verify_signature(headers, BODY, SECRET, now)


def test_the_signature_covers_the_body_the_id_and_the_timestamp() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    headers = headers_at(now, sign(SECRET, MSG_ID, int(now.timestamp()), BODY))
    with pytest.raises(WebhookSignatureError):
        verify_signature(headers, BODY + b" ", SECRET, now)
    with pytest.raises(WebhookSignatureError):
        verify_signature({**headers, "webhook-id": "another-id"}, BODY, SECRET, now)
    earlier = str(int(now.timestamp()) - 1)
    with pytest.raises(WebhookSignatureError):
        verify_signature({**headers, "webhook-timestamp": earlier}, BODY, SECRET, now)
    with pytest.raises(WebhookSignatureError, match="integer"):
        verify_signature({**headers, "webhook-timestamp": "soon"}, BODY, SECRET, now)


def test_rejections_never_show_the_secret_or_the_expected_signature() -> None:
    now = datetime.now(UTC)
    expected = sign(SECRET, MSG_ID, int(now.timestamp()), BODY)
    with pytest.raises(WebhookSignatureError) as info:
        verify_signature(headers_at(now, "v1,AAAA"), BODY, SECRET, now)
    assert SECRET not in str(info.value) and expected[3:] not in str(info.value)


def test_the_envelope_is_read_after_the_signature() -> None:
    now = datetime.now(UTC)

    def request(body: bytes) -> WebhookRequest:
        headers = headers_at(now, sign(SECRET, MSG_ID, int(now.timestamp()), body))
        return WebhookRequest(headers=headers, body=body, received_at=now)

    envelope = read_envelope(request(BODY), SECRET)
    assert envelope.event_id == MSG_ID  # the inbox dedupes on webhook-id
    assert envelope.event_type == "subscription.active"
    assert envelope.occurred_at == datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    with pytest.raises(WebhookPayloadError):
        read_envelope(request(b"not json"), SECRET)
    # An unreadable body with a bad signature is a signature problem first (401, not 400).
    bad = WebhookRequest(headers=headers_at(now, "v1,AAAA"), body=b"not json", received_at=now)
    with pytest.raises(WebhookSignatureError):
        read_envelope(bad, SECRET)
