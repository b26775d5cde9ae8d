"""Polar webhooks: the Standard Webhooks signature check, and events → normalized events.

**Signature** (docs/providers.md#polar-webhook-signatures, Polar's
``server/polar/webhook/tasks.py``): Standard Webhooks, checked with the ``standardwebhooks``
library that Polar's SDKs build on. The headers are
``webhook-id`` (stable across Polar's retries: the inbox dedupes on it), ``webhook-timestamp``
(Unix seconds, new on every attempt) and ``webhook-signature`` (one or more space-separated
``v1,<base64>`` entries). Polar keys the HMAC with **the whole secret string, ``whsec_``
prefix included, as UTF-8 bytes**: it hands the library ``base64(secret)``, which the library
decodes back to that string; we key the library the same way (a library keyed with the
``whsec_`` string itself would base64-decode it into another key). A delivery is accepted when
any ``v1`` entry matches and its timestamp is within 5 minutes of its arrival, either way.

**Events**: the body is ``{"type", "timestamp", "data"}``. :class:`EventParser` dispatches on
``type`` through a dict of handlers and logs what it ignores; every event is dated by the
envelope's ``timestamp`` (the moment Polar rendered ``data``), so an older delivery never
overwrites newer state.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from billing_gql import (
    METADATA_REFUND_ID,
    BillingEvent,
    EventKind,
    Money,
    PaymentInfo,
    RefundInfo,
    StoredDelivery,
    WebhookEnvelope,
    WebhookPayloadError,
    WebhookRequest,
    WebhookSignatureError,
    handler_for,
    metadata_of,
    money_from_minor,
    our_ids,
    subscription_updated,
    webhook_json,
)
from billing_gql_polar.api import PolarApi
from billing_gql_polar.invoices import order_invoice
from billing_gql_polar.mapping import (
    customer_external_id,
    grant_from_webhook,
    object_id,
    parse_time,
    subscription_snapshot,
)

__all__ = [
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE_SECONDS",
    "EventParser",
    "read_envelope",
    "sign",
    "verify_signature",
]

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
TOLERANCE_SECONDS = 300


def _library(secret: str) -> Webhook:
    """The Standard Webhooks library keyed as Polar keys it: it is given ``base64(secret)``,
    which it decodes back to the whole ``whsec_…`` string's bytes."""
    return Webhook(base64.b64encode(secret.encode("utf-8")).decode("ascii"))


def sign(secret: str, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` value Polar sends (``v1,<base64 HMAC-SHA256>``), made by the
    Standard Webhooks library keyed as Polar keys it."""
    moment = datetime.fromtimestamp(int(timestamp), UTC)
    signature: str = _library(secret).sign(webhook_id, moment, body)
    return signature


def verify_signature(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    now: datetime,
    tolerance: int = TOLERANCE_SECONDS,
) -> tuple[str, int]:
    """Check a delivery's Standard Webhooks headers against ``body``.

    The headers' presence and the 5-minute window (against ``now``, the delivery's arrival on
    our clock) are checked here, so each refusal says which; the signature is checked by the
    Standard Webhooks library (which also holds the timestamp to its own 5 minutes of the
    wall clock).

    :returns: (``webhook-id``, timestamp).
    :raises WebhookSignatureError: a header is missing, no ``v1`` signature matches, or the
        timestamp is more than ``tolerance`` seconds from ``now`` (never saying what was
        expected).
    """
    webhook_id = headers.get(ID_HEADER, "").strip()
    raw_timestamp = headers.get(TIMESTAMP_HEADER, "").strip()
    header = headers.get(SIGNATURE_HEADER, "").strip()
    if not webhook_id or not raw_timestamp or not header:
        raise WebhookSignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookSignatureError("webhook-timestamp is not an integer") from None
    if not any(entry.startswith("v1,") for entry in header.split()):
        raise WebhookSignatureError("webhook-signature has no v1 signature")
    if abs(now.timestamp() - timestamp) > tolerance:
        raise WebhookSignatureError("webhook-timestamp is outside the tolerance")
    delivered = {ID_HEADER: webhook_id, TIMESTAMP_HEADER: raw_timestamp, SIGNATURE_HEADER: header}
    try:
        _library(secret).verify(body, delivered, json_parse=False)
    except WebhookVerificationError as exc:
        raise WebhookSignatureError(f"webhook-signature: {exc}") from None
    return webhook_id, timestamp


def _envelope(body: bytes) -> dict[str, Any]:
    return webhook_json(body, "a Polar webhook envelope")


def read_envelope(request: WebhookRequest, secret: str) -> WebhookEnvelope:
    """Verify a delivery on its raw body, then read the event's type and time."""
    webhook_id, _ = verify_signature(request.headers, request.body, secret, request.received_at)
    event = _envelope(request.body)
    event_type = event.get("type")
    return WebhookEnvelope(
        event_id=webhook_id,
        event_type=event_type if isinstance(event_type, str) else None,
        occurred_at=parse_time(event.get("timestamp")),
    )


Handler = Callable[[str, Mapping[str, Any], datetime], Awaitable[list[BillingEvent]]]


def pre_tax(obj: Mapping[str, Any]) -> Money | None:
    """What a checkout or an order charges before tax, after discounts (``net_amount``): the
    core compares it with the checkout's price. Polar, the merchant of record, adds tax on
    top of the product's price, so the total would let tax cover a shortfall."""
    return money_from_minor(obj.get("net_amount"), obj.get("currency"))


class EventParser:
    """Turns one Polar delivery into normalized :class:`~billing_gql.BillingEvent` values."""

    def __init__(self, logger: logging.Logger, api: Callable[[], PolarApi] | None = None) -> None:
        self._log = logger
        self._api = api
        subscription = self.subscription_changed
        grant = self.grant_changed
        self.handlers: dict[str, Handler] = {
            "checkout.updated": self.checkout_changed,
            "checkout.expired": self.checkout_changed,
            "order.paid": self.order_paid,
            "order.refunded": self.order_refunded,
            "refund.created": self.refund_changed,
            "refund.updated": self.refund_changed,
            "subscription.created": subscription,
            "subscription.active": subscription,
            "subscription.updated": subscription,
            "subscription.canceled": subscription,
            "subscription.uncanceled": subscription,
            "subscription.past_due": subscription,
            "subscription.paused": subscription,
            "subscription.resumed": subscription,
            "subscription.revoked": subscription,
            "benefit_grant.created": grant,
            "benefit_grant.updated": grant,
            "benefit_grant.cycled": grant,
            "benefit_grant.revoked": grant,
        }

    async def parse(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        """The normalized events of ``delivery`` (empty for types we do not use)."""
        event = _envelope(delivery.body)
        event_type = event.get("type")
        handler = handler_for(
            self.handlers, event_type, self._log, f"polar event {delivery.event_id}"
        )
        if handler is None:
            return []
        assert isinstance(event_type, str)
        data = event.get("data")
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise WebhookPayloadError(f"polar delivery {delivery.event_id} has no data object")
        occurred_at = (
            parse_time(event.get("timestamp"))
            or delivery.occurred_at
            or parse_time(data.get("modified_at"))
            or parse_time(data.get("created_at"))
            or delivery.received_at
        )
        return await handler(event_type, data, occurred_at)

    # -- checkouts -----------------------------------------------------------------------------

    async def checkout_changed(
        self, event_type: str, checkout: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``checkout.updated``/``checkout.expired``: only the end of a checkout matters
        (``succeeded``, ``expired``, ``failed``); ``open`` and ``confirmed`` are steps."""
        status = checkout.get("status")
        kinds = {
            "succeeded": EventKind.CHECKOUT_COMPLETED,
            "expired": EventKind.CHECKOUT_EXPIRED,
            "failed": EventKind.CHECKOUT_FAILED,
        }
        kind = kinds.get(status) if isinstance(status, str) else None
        checkout_id, customer_id, _ = our_ids(metadata_of(checkout))
        if kind is None or checkout_id is None:
            self._log.info(
                "polar %s of checkout %s (%s%s) ignored",
                event_type,
                checkout.get("id"),
                status,
                "" if checkout_id else ", not ours",
            )
            return []
        return [
            BillingEvent(
                kind,
                occurred_at,
                checkout_id=checkout_id,
                provider_checkout_id=object_id(checkout.get("id")),
                customer_id=customer_id,
                provider_customer_id=object_id(checkout.get("customer_id")),
                external_customer_id=object_id(checkout.get("external_customer_id")),
                amount=pre_tax(checkout),
            )
        ]

    # -- orders --------------------------------------------------------------------------------

    async def order_paid(
        self, event_type: str, order: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``order.paid``: money received. The order of a checkout (``purchase`` or
        ``subscription_create``) completes that checkout; a later one (a renewal, a plan
        change) pays the subscription."""
        amount = money_from_minor(order.get("total_amount"), order.get("currency"))
        order_id = object_id(order.get("id"))
        if amount is None or order_id is None:
            raise WebhookPayloadError(f"polar order {order.get('id')} has no amount")
        checkout_id, customer_id, _ = our_ids(metadata_of(order))
        reason = order.get("billing_reason")
        if reason not in ("purchase", "subscription_create"):
            # Polar copies the checkout's metadata onto later orders too: they do not pay it.
            checkout_id = None
        ids: dict[str, Any] = {
            "customer_id": customer_id,
            "provider_customer_id": object_id(order.get("customer_id")),
            "external_customer_id": customer_external_id(order),
        }
        payment = PaymentInfo(
            provider_ref=order_id,
            amount=amount,
            status="succeeded",
            checkout_id=checkout_id,
            provider_checkout_id=object_id(order.get("checkout_id")) if checkout_id else None,
            provider_subscription_id=object_id(order.get("subscription_id")),
            customer_id=customer_id,
            provider_customer_id=ids["provider_customer_id"],
            received_at=occurred_at,
            details={
                "order": order_id,
                "billing_reason": reason,
                "net_amount": order.get("net_amount"),
                "tax_amount": order.get("tax_amount"),
                "discount_amount": order.get("discount_amount"),
            },
        )
        mirrored = order_invoice(order)
        invoice = (
            [
                BillingEvent(
                    EventKind.INVOICE_UPDATED,
                    occurred_at,
                    invoice=mirrored,
                    customer_id=customer_id,
                    provider_customer_id=ids["provider_customer_id"],
                    external_customer_id=ids["external_customer_id"],
                )
            ]
            if mirrored is not None
            else []
        )
        if checkout_id is not None:
            return [
                BillingEvent(
                    EventKind.CHECKOUT_COMPLETED,
                    occurred_at,
                    checkout_id=checkout_id,
                    provider_checkout_id=payment.provider_checkout_id,
                    # A free first order (a trial, a full discount) completes without money.
                    payment=payment if amount.minor > 0 else None,
                    amount=pre_tax(order),
                    **ids,
                ),
                *invoice,
            ]
        if amount.minor <= 0:
            self._log.info("polar order %s paid nothing: no payment", order_id)
            return invoice
        return [
            BillingEvent(EventKind.PAYMENT_SUCCEEDED, occurred_at, payment=payment, **ids),
            *invoice,
        ]

    async def order_refunded(
        self, event_type: str, order: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``order.refunded``: each refund of the order (read from the API), so that the core
        records each one once, whichever of Polar's events about it comes first; without the
        API, the total refunded on the order so far (tax included, as the payment recorded
        ``total_amount``)."""
        refunded = order.get("refunded_amount")
        refunded_tax = order.get("refunded_tax_amount")
        total = (refunded if isinstance(refunded, int) else 0) + (
            refunded_tax if isinstance(refunded_tax, int) else 0
        )
        amount = money_from_minor(total, order.get("currency"))
        if amount is None:
            raise WebhookPayloadError(f"polar order {order.get('id')} has no currency")
        _, customer_id, _ = our_ids(metadata_of(order))
        ids: dict[str, Any] = {
            "customer_id": customer_id,
            "provider_customer_id": object_id(order.get("customer_id")),
            "external_customer_id": customer_external_id(order),
        }
        order_id = str(order["id"])
        if self._api is not None:
            refunds = await self._api().list_refunds(order_id)
            events = [self._refund_event(r, occurred_at, total=amount, **ids) for r in refunds]
            found = [e for e in events if e is not None]
            if found:
                return found
        return [
            BillingEvent(
                EventKind.REFUND_SUCCEEDED,
                occurred_at,
                refund=RefundInfo(payment_provider_ref=order_id, amount_refunded=amount),
                **ids,
            )
        ]

    async def refund_changed(
        self, event_type: str, refund: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``refund.created`` / ``refund.updated``: one refund, by its status."""
        event = self._refund_event(refund, occurred_at)
        return [event] if event is not None else []

    @staticmethod
    def _refund_event(
        refund: Mapping[str, Any],
        occurred_at: datetime,
        *,
        total: Money | None = None,
        **ids: Any,
    ) -> BillingEvent | None:
        """``refund.succeeded`` / ``refund.failed`` for one Polar refund (``None`` while it is
        pending), tax included, with our refund id when we made it."""
        status = refund.get("status")
        if status == "succeeded":
            kind = EventKind.REFUND_SUCCEEDED
        elif status in ("failed", "canceled"):
            kind = EventKind.REFUND_FAILED
        else:
            return None
        order_id = object_id(refund.get("order_id"))
        amount, tax = refund.get("amount"), refund.get("tax_amount")
        if order_id is None or not isinstance(amount, int):
            raise WebhookPayloadError(f"polar refund {refund.get('id')} names no order or amount")
        ours = metadata_of(refund).get(METADATA_REFUND_ID)
        reason = refund.get("reason")
        info = RefundInfo(
            payment_provider_ref=order_id,
            amount_refunded=total,
            provider_refund_id=object_id(refund.get("id")),
            amount=money_from_minor(
                amount + (tax if isinstance(tax, int) else 0), refund.get("currency")
            ),
            refund_id=ours if isinstance(ours, str) else None,
            reason=reason if isinstance(reason, str) else None,
        )
        return BillingEvent(kind, occurred_at, refund=info, **ids)

    # -- subscriptions -------------------------------------------------------------------------

    async def subscription_changed(
        self, event_type: str, sub: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """Every ``subscription.*`` event carries the whole subscription; ``revoked`` means
        access is lost now."""
        snapshot = subscription_snapshot(sub, revoked=event_type == "subscription.revoked")
        return [subscription_updated(snapshot, occurred_at)]

    # -- benefit grants ------------------------------------------------------------------------

    async def grant_changed(
        self, event_type: str, grant: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``benefit_grant.*``: a benefit granted to (or revoked from) a customer; the core's
        ``map_provider_grant`` hook turns the benefit's ``metadata`` into features."""
        provider_grant = grant_from_webhook(grant, revoked=event_type == "benefit_grant.revoked")
        return [
            BillingEvent(
                EventKind.GRANT_UPDATED,
                occurred_at,
                provider_customer_id=provider_grant.provider_customer_id,
                external_customer_id=provider_grant.external_customer_id,
                grant=provider_grant,
            )
        ]
