"""``Stripe-Signature`` verification, exactly as stripe-python's ``_webhook.py`` does it."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from billing_gql import WebhookPayloadError, WebhookRequest, WebhookSignatureError
from billing_gql_stripe.webhooks import read_envelope, sign_header, verify_signature

SECRET = "whsec_test_secret"
BODY = json.dumps(
    {"id": "evt_1", "object": "event", "type": "invoice.paid", "created": 1717236000}
).encode()
NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
T = int(NOW.timestamp())


def stripe_python_header(secret: str, t: int, payload: str) -> str:
    """The helper stripe-python's own tests use to sign."""
    digest = hmac.new(secret.encode("utf-8"), f"{t}.{payload}".encode(), hashlib.sha256)
    return f"t={t},v1={digest.hexdigest()}"


def test_a_header_made_like_stripe_python_verifies() -> None:
    header = stripe_python_header(SECRET, T, BODY.decode())
    assert header == sign_header(SECRET, BODY, T)
    assert verify_signature(BODY, header, SECRET, NOW) == T


def test_any_of_several_v1_signatures_may_match() -> None:
    good = sign_header(SECRET, BODY, T).split(",")[1]
    header = f"t={T},v1={'0' * 64},{good},v1=deadbeef"
    assert verify_signature(BODY, header, SECRET, NOW) == T


def test_v0_and_other_schemes_are_ignored() -> None:
    digest = sign_header(SECRET, BODY, T).split("v1=")[1]
    with pytest.raises(WebhookSignatureError):
        verify_signature(BODY, f"t={T},v0={digest}", SECRET, NOW)
    header = f"t={T},v0=abc,v1={digest},x=y"
    assert verify_signature(BODY, header, SECRET, NOW) == T


def test_items_split_on_the_first_equals_sign() -> None:
    # A value containing '=' must not break the split; whitespace around items is tolerated.
    digest = sign_header(SECRET, BODY, T).split("v1=")[1]
    assert verify_signature(BODY, f" t={T} , v1={digest} ,v1=a=b", SECRET, NOW) == T


def test_future_timestamps_are_accepted() -> None:
    later = T + 3600
    assert verify_signature(BODY, sign_header(SECRET, BODY, later), SECRET, NOW) == later


def test_300_seconds_old_passes_and_301_is_stale() -> None:
    assert verify_signature(BODY, sign_header(SECRET, BODY, T - 300), SECRET, NOW) == T - 300
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        verify_signature(BODY, sign_header(SECRET, BODY, T - 301), SECRET, NOW)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "v1=abc",
        f"t=soon,v1={'a' * 64}",
        f"t={T}",
        sign_header("whsec_other", BODY, T),
        # The secret is used as-is: stripping the whsec_ prefix gives another key.
        sign_header(SECRET.removeprefix("whsec_"), BODY, T),
    ],
)
def test_bad_headers_are_rejected(header: str | None) -> None:
    with pytest.raises(WebhookSignatureError):
        verify_signature(BODY, header, SECRET, NOW)


def test_a_tampered_body_is_rejected() -> None:
    header = sign_header(SECRET, BODY, T)
    with pytest.raises(WebhookSignatureError):
        verify_signature(BODY.replace(b"invoice.paid", b"invoice.void"), header, SECRET, NOW)
    with pytest.raises(WebhookSignatureError):
        verify_signature(BODY + b" ", header, SECRET, NOW)


def test_envelope_after_a_valid_signature() -> None:
    request = WebhookRequest({"stripe-signature": sign_header(SECRET, BODY, T)}, BODY, NOW)
    envelope = read_envelope(request, SECRET)
    assert envelope.event_id == "evt_1"
    assert envelope.event_type == "invoice.paid"
    assert envelope.occurred_at == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert envelope.keep_headers == {}


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"type": "x"}', b'{"id": ""}'])
def test_unreadable_bodies_with_valid_signatures_are_payload_errors(body: bytes) -> None:
    request = WebhookRequest({"stripe-signature": sign_header(SECRET, body, T)}, body, NOW)
    with pytest.raises(WebhookPayloadError):
        read_envelope(request, SECRET)


def test_an_unsigned_unreadable_body_is_a_signature_error_first() -> None:
    with pytest.raises(WebhookSignatureError):
        read_envelope(WebhookRequest({}, b"not json", NOW), SECRET)
