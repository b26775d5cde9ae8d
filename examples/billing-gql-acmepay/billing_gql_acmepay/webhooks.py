"""AcmePay webhooks: the signature check, and events → normalized billing events.

The scheme (the package README says the same to AcmePay account owners):

- ``AcmePay-Timestamp``: Unix seconds when the delivery was signed;
- ``AcmePay-Signature``: ``v1=<hex>``, the hex HMAC-SHA256 keyed by the webhook secret of
  ``"<timestamp>." + <raw body bytes>``; during a secret rotation one ``v1=`` per secret,
  separated by spaces (any match is enough);
- a timestamp more than :data:`TOLERANCE_SECONDS` away from the arrival time (earlier or later)
  is refused, so a captured delivery cannot be replayed later.

Verification runs on the raw bytes before any JSON is read. Parsing dispatches through
:attr:`EventMapper.handlers` (event type → handler) and logs the types it ignores; AcmePay
embeds the objects it talks about, so parsing needs no API call and is the same on a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from billing_gql import (
    BillingEvent,
    EventKind,
    RefundInfo,
    StoredDelivery,
    WebhookEnvelope,
    WebhookPayloadError,
    WebhookRequest,
    WebhookSignatureError,
    handler_for,
    subscription_updated,
    webhook_json,
)
from billing_gql_acmepay.mapping import (
    checkout_event,
    money,
    object_id,
    payment_info,
    subscription_snapshot,
    text,
    timestamp,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE_SECONDS",
    "EventMapper",
    "compute_signature",
    "read_envelope",
    "signature_headers",
    "verify_signature",
]

SIGNATURE_HEADER = "acmepay-signature"
TIMESTAMP_HEADER = "acmepay-timestamp"
TOLERANCE_SECONDS = 300


def compute_signature(secret: str, timestamp_: int | str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"{timestamp}." + body`` keyed by ``secret``."""
    signed = f"{timestamp_}.".encode() + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def signature_headers(secrets: Sequence[str], body: bytes, timestamp_: int) -> dict[str, str]:
    """The two headers AcmePay sends with ``body``, signed with each of ``secrets``."""
    signatures = " ".join(f"v1={compute_signature(s, timestamp_, body)}" for s in secrets)
    return {TIMESTAMP_HEADER: str(timestamp_), SIGNATURE_HEADER: signatures}


def verify_signature(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    now: datetime,
    tolerance: int = TOLERANCE_SECONDS,
) -> int:
    """Check the delivery's signature; return its timestamp or raise
    :class:`~billing_gql.WebhookSignatureError` (never saying what was expected)."""
    raw_stamp = headers.get(TIMESTAMP_HEADER)
    header = headers.get(SIGNATURE_HEADER)
    if not raw_stamp or not header:
        raise WebhookSignatureError("missing AcmePay-Timestamp or AcmePay-Signature")
    try:
        stamp = int(raw_stamp.strip())
    except ValueError:
        raise WebhookSignatureError("AcmePay-Timestamp is not an integer") from None
    candidates = [
        value
        for scheme, sep, value in (p.partition("=") for p in header.split())
        if sep and scheme == "v1"
    ]
    if not candidates:
        raise WebhookSignatureError("AcmePay-Signature has no v1 signature")
    expected = compute_signature(secret, stamp, body).encode()
    # Compare every candidate (no early exit), each in constant time.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise WebhookSignatureError("no AcmePay-Signature v1 signature matches")
    if abs(now.timestamp() - stamp) > tolerance:
        raise WebhookSignatureError("AcmePay-Timestamp is outside the tolerance")
    return stamp


def _event_object(body: bytes) -> dict[str, Any]:
    return webhook_json(body, "an AcmePay event object")


def read_envelope(request: WebhookRequest, secret: str) -> WebhookEnvelope:
    """Verify a delivery on its raw body, then read the event's id, type and time."""
    verify_signature(request.body, request.headers, secret, request.received_at)
    event = _event_object(request.body)
    event_id = text(event.get("id"))
    if event_id is None:
        raise WebhookPayloadError("the event has no id")
    return WebhookEnvelope(
        event_id=event_id,
        event_type=text(event.get("type")),
        occurred_at=timestamp(event.get("created_at"), "created_at"),
    )


Handler = Callable[[Mapping[str, Any], datetime], list[BillingEvent]]


class EventMapper:
    """Turns one stored AcmePay event into normalized :class:`~billing_gql.BillingEvent`
    values. Every event is dated by its ``created_at``: AcmePay's time of the change, which
    the core compares so that an older state never overwrites a newer one."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self.handlers: dict[str, Handler] = {
            "checkout.paid": self.checkout_paid,
            "checkout.expired": self.checkout_expired,
            "subscription.created": self.subscription_changed,
            "subscription.updated": self.subscription_changed,
            "subscription.canceled": self.subscription_changed,
            "payment.succeeded": self.payment,
            "payment.failed": self.payment,
            "payment.refunded": self.payment_refunded,
        }

    def parse(self, delivery: StoredDelivery) -> list[BillingEvent]:
        """The events of a stored delivery (empty for types billing-gql does not use)."""
        event = _event_object(delivery.body)
        event_type = text(event.get("type"))
        handler = handler_for(
            self.handlers, event_type, self._log, f"acmepay event {delivery.event_id}"
        )
        if handler is None:
            return []
        data = event.get("data")
        occurred_at = timestamp(event.get("created_at"), "created_at")
        if not isinstance(data, Mapping) or occurred_at is None:
            raise WebhookPayloadError(f"acmepay event {delivery.event_id} has no data or time")
        return handler(data, occurred_at)

    # -- handlers ------------------------------------------------------------------------------

    def checkout_paid(
        self, checkout: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """The buyer paid (or started a trial): the checkout with what it created."""
        sub = checkout.get("subscription")
        pay = checkout.get("payment")
        return [
            checkout_event(
                EventKind.CHECKOUT_COMPLETED,
                checkout,
                occurred_at,
                subscription=subscription_snapshot(sub) if isinstance(sub, Mapping) else None,
                payment=payment_info(pay) if isinstance(pay, Mapping) else None,
            )
        ]

    def checkout_expired(
        self, checkout: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        return [checkout_event(EventKind.CHECKOUT_EXPIRED, checkout, occurred_at)]

    def subscription_changed(
        self, sub: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """Every ``subscription.*`` event carries the whole subscription: a snapshot."""
        return [subscription_updated(subscription_snapshot(sub), occurred_at)]

    def payment(self, payment: Mapping[str, Any], occurred_at: datetime) -> list[BillingEvent]:
        """``payment.succeeded`` / ``payment.failed``: money for a checkout or a renewal."""
        info = payment_info(payment)
        kind = EventKind.PAYMENT_FAILED if info.status == "failed" else EventKind.PAYMENT_SUCCEEDED
        return [
            BillingEvent(
                kind,
                occurred_at,
                checkout_id=info.checkout_id,
                provider_checkout_id=info.provider_checkout_id,
                customer_id=info.customer_id,
                provider_customer_id=info.provider_customer_id,
                payment=info,
            )
        ]

    def payment_refunded(
        self, payment: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``payment.refunded``: ``amount_refunded`` is the total refunded so far."""
        payment_id = object_id(payment.get("id"))
        if payment_id is None:
            raise WebhookPayloadError("the refunded payment has no id")
        refunded = money(payment.get("amount_refunded"), payment.get("currency"), "amount_refunded")
        return [
            BillingEvent(
                EventKind.REFUND_SUCCEEDED,
                occurred_at,
                provider_customer_id=object_id(payment.get("customer")),
                refund=RefundInfo(payment_provider_ref=payment_id, amount_refunded=refunded),
            )
        ]
