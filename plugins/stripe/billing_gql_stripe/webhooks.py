"""Stripe webhooks: the ``Stripe-Signature`` check, and events → normalized billing events.

Verification is the official SDK's (``stripe.WebhookSignature.verify_header``,
docs/providers.md#stripe-webhook-signatures): the hex HMAC-SHA256 of ``"{t}.{raw_body}"`` keyed
by the ``whsec_…`` secret as given, any ``v1`` may match; a ``t`` more than 300 s before the
delivery arrived is rejected (a ``t`` in the future is accepted, as the SDK does).

Parsing dispatches through :data:`EventParser.handlers` (event type → handler) and logs the
types it ignores. Handlers may call Stripe (through :class:`~billing_gql_stripe.api.StripeApi`)
to read what an event only names, e.g. the subscription a completed checkout created.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import stripe

from billing_gql import (
    METADATA_REFUND_ID,
    BillingEvent,
    DisputeInfo,
    EventKind,
    Money,
    PaymentInfo,
    RefundInfo,
    SubscriptionSnapshot,
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
from billing_gql_stripe.api import StripeApi
from billing_gql_stripe.invoices import invoice_mirror
from billing_gql_stripe.mapping import (
    object_id,
    subscription_snapshot,
    timestamp,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TOLERANCE_SECONDS",
    "EventParser",
    "read_envelope",
    "sign_header",
    "verify_signature",
]

SIGNATURE_HEADER = "stripe-signature"
TOLERANCE_SECONDS = 300


def sign_header(secret: str, body: bytes, timestamp_: int) -> str:
    """A ``Stripe-Signature`` value the way Stripe writes it (``t=…,v1=…``), made by the SDK."""
    header: str = stripe.WebhookSignature.generate_signature_header(
        body.decode("utf-8"), secret, timestamp_
    )
    return header


def verify_signature(
    body: bytes,
    header: str | None,
    secret: str,
    now: datetime,
    tolerance: int = TOLERANCE_SECONDS,
) -> int:
    """Check ``header`` against ``body`` with the SDK's verifier; return its timestamp or
    raise :class:`~billing_gql.WebhookSignatureError` (never saying what was expected).

    The SDK checks the signature; the 300 s window is measured here against ``now`` (the
    delivery's arrival on our clock), because the SDK can only read the wall clock."""
    if not header:
        raise WebhookSignatureError("missing Stripe-Signature header")
    # Items padded with spaces (``t=1, v1=…``) are trimmed: the SDK compares keys exactly.
    items = [item.strip() for item in header.split(",")]
    try:
        stripe.WebhookSignature.verify_header(body, ",".join(items), secret, tolerance=None)
    except stripe.SignatureVerificationError as exc:
        raise WebhookSignatureError(f"Stripe-Signature: {exc.user_message}") from None
    except UnicodeDecodeError:
        raise WebhookSignatureError("the body is not UTF-8 and cannot match a signature") from None
    # Verified: the SDK read ``t`` from the first ``t=`` item as an integer.
    stamp = int(next(item.split("=", 2)[1] for item in items if item.split("=", 1)[0] == "t"))
    if stamp < now.timestamp() - tolerance:
        raise WebhookSignatureError("Stripe-Signature timestamp is outside the tolerance")
    return stamp


def read_envelope(request: WebhookRequest, secret: str) -> WebhookEnvelope:
    """Verify a delivery, then read the event's id, type and time from its body."""
    verify_signature(
        request.body, request.headers.get(SIGNATURE_HEADER), secret, request.received_at
    )
    event = webhook_json(request.body, "a Stripe event object")
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise WebhookPayloadError("event has no id")
    event_type = event.get("type")
    return WebhookEnvelope(
        event_id=event_id,
        event_type=event_type if isinstance(event_type, str) else None,
        occurred_at=timestamp(event.get("created")),
    )


_DISPUTE_OUTCOMES = {
    "won": "won",
    "lost": "lost",
    # An inquiry closed without a chargeback, or one prevented: the money stays with us.
    "warning_closed": "won",
    "prevented": "won",
}
"""Stripe dispute statuses that close a dispute → our outcome; every other one is open."""

Handler = Callable[[Mapping[str, Any], datetime], Awaitable[list[BillingEvent]]]


class EventParser:
    """Turns one Stripe ``event`` into normalized :class:`~billing_gql.BillingEvent` values."""

    def __init__(self, api: Callable[[], StripeApi], logger: logging.Logger) -> None:
        self._api = api
        self._log = logger
        self.handlers: dict[str, Handler] = {
            "checkout.session.completed": self.checkout_completed,
            "checkout.session.async_payment_succeeded": self.checkout_completed,
            "checkout.session.async_payment_failed": self.checkout_failed,
            "checkout.session.expired": self.checkout_expired,
            "customer.subscription.created": self.subscription_changed,
            "customer.subscription.updated": self.subscription_changed,
            "customer.subscription.deleted": self.subscription_changed,
            "customer.subscription.paused": self.subscription_changed,
            "customer.subscription.resumed": self.subscription_changed,
            "invoice.paid": self.invoice_paid,
            "invoice.payment_failed": self.invoice_payment_failed,
            "invoice.finalized": self.invoice_changed,
            "invoice.voided": self.invoice_changed,
            "invoice.marked_uncollectible": self.invoice_changed,
            "charge.refunded": self.charge_refunded,
            "charge.dispute.created": self.charge_disputed,
            "charge.dispute.updated": self.charge_disputed,
            "charge.dispute.closed": self.charge_disputed,
            "charge.refund.updated": self.refund_changed,
            "refund.created": self.refund_changed,
            "refund.updated": self.refund_changed,
            "refund.failed": self.refund_changed,
        }

    async def parse(self, event: Mapping[str, Any]) -> Sequence[BillingEvent]:
        """The normalized events of ``event`` (empty for types we do not use)."""
        event_type = event.get("type")
        handler = handler_for(
            self.handlers, event_type, self._log, f"stripe event {event.get('id')}"
        )
        if handler is None:
            return []
        data = event.get("data")
        obj = data.get("object") if isinstance(data, Mapping) else None
        occurred_at = timestamp(event.get("created"))
        if not isinstance(obj, Mapping) or occurred_at is None:
            raise WebhookPayloadError(f"stripe event {event.get('id')} has no data.object")
        return await handler(obj, occurred_at)

    # -- checkout sessions ---------------------------------------------------------------------

    @staticmethod
    def _session_ids(session: Mapping[str, Any]) -> dict[str, Any]:
        checkout_id, customer_id, _ = our_ids(metadata_of(session))
        reference = session.get("client_reference_id")
        return {
            "checkout_id": checkout_id or (reference if isinstance(reference, str) else None),
            "provider_checkout_id": object_id(session.get("id")),
            "customer_id": customer_id,
            "provider_customer_id": object_id(session.get("customer")),
        }

    async def checkout_completed(
        self, session: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``checkout.session.completed`` / ``async_payment_succeeded``: paid (or nothing
        due, as with a trial). An unpaid completion waits for the async payment's outcome."""
        ids = self._session_ids(session)
        payment_status = session.get("payment_status")
        if payment_status not in ("paid", "no_payment_required"):
            self._log.info(
                "stripe checkout %s completed with payment %s: waiting for the payment",
                ids["provider_checkout_id"],
                payment_status,
            )
            return []
        mode = session.get("mode")
        # What the buyer was charged (tax included: Stripe's prices may include it, and the
        # core wants at least the price); the core compares it, and the session id, with the
        # checkout it names (``client_reference_id`` is the buyer's to set on Payment Links).
        amount = money_from_minor(session.get("amount_total"), session.get("currency"))
        if mode == "subscription":
            snapshot = await self._subscription_of(session)
            return [
                BillingEvent(
                    EventKind.CHECKOUT_COMPLETED,
                    occurred_at,
                    subscription=snapshot,
                    amount=amount,
                    **ids,
                )
            ]
        if mode == "payment":
            payment = None
            if amount is not None and amount.minor > 0:
                payment = PaymentInfo(
                    provider_ref=object_id(session.get("payment_intent"))
                    or str(ids["provider_checkout_id"]),
                    amount=amount,
                    status="succeeded",
                    checkout_id=ids["checkout_id"],
                    provider_checkout_id=ids["provider_checkout_id"],
                    customer_id=ids["customer_id"],
                    provider_customer_id=ids["provider_customer_id"],
                    received_at=occurred_at,
                )
            return [
                BillingEvent(
                    EventKind.CHECKOUT_COMPLETED, occurred_at, payment=payment, amount=amount, **ids
                )
            ]
        self._log.info("stripe checkout %s in mode %s ignored", ids["provider_checkout_id"], mode)
        return []

    async def _subscription_of(self, session: Mapping[str, Any]) -> SubscriptionSnapshot | None:
        raw = session.get("subscription")
        if isinstance(raw, Mapping) and "status" in raw:
            return subscription_snapshot(raw)
        sub_id = object_id(raw)
        if sub_id is None:
            return None
        # The session only names the subscription; its state (trialing or active, periods)
        # is read from Stripe, as Stripe recommends for events that arrive in any order, and
        # dated by Stripe's answer (not by this older event).
        fetched, read_at = await self._api().retrieve_subscription_at(sub_id)
        if fetched is None:
            return None
        return subscription_snapshot(fetched, updated_at=read_at)

    async def checkout_failed(
        self, session: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        return [BillingEvent(EventKind.CHECKOUT_FAILED, occurred_at, **self._session_ids(session))]

    async def checkout_expired(
        self, session: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        return [BillingEvent(EventKind.CHECKOUT_EXPIRED, occurred_at, **self._session_ids(session))]

    # -- subscriptions -------------------------------------------------------------------------

    async def subscription_changed(
        self, sub: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """Every ``customer.subscription.*`` event carries the whole subscription."""
        return [subscription_updated(subscription_snapshot(sub), occurred_at)]

    # -- invoices and charges ------------------------------------------------------------------

    @staticmethod
    def _invoice_subscription(invoice: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
        """(Stripe subscription id, that subscription's metadata) of an invoice."""
        parent = invoice.get("parent")
        details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
        if isinstance(details, Mapping):
            meta = details.get("metadata")
            return object_id(details.get("subscription")), meta if isinstance(meta, Mapping) else {}
        # Before 2025-03-31: invoice.subscription and subscription_details at the top.
        legacy = invoice.get("subscription_details")
        meta = legacy.get("metadata") if isinstance(legacy, Mapping) else None
        return object_id(invoice.get("subscription")), meta if isinstance(meta, Mapping) else {}

    def _invoice_payment(
        self, invoice: Mapping[str, Any], occurred_at: datetime, *, failed: bool
    ) -> tuple[PaymentInfo | None, dict[str, Any]]:
        sub_id, meta = self._invoice_subscription(invoice)
        checkout_id, customer_id, _ = our_ids(meta)
        # Only the first invoice pays for the checkout; renewals pay the subscription.
        if invoice.get("billing_reason") != "subscription_create":
            checkout_id = None
        ids: dict[str, Any] = {
            "checkout_id": checkout_id,
            "customer_id": customer_id,
            "provider_customer_id": object_id(invoice.get("customer")),
        }
        key = "amount_due" if failed else "amount_paid"
        amount = money_from_minor(invoice.get(key), invoice.get("currency"))
        invoice_id = object_id(invoice.get("id"))
        if amount is None or invoice_id is None:
            return None, ids
        transitions = invoice.get("status_transitions")
        paid_at = (
            timestamp(transitions.get("paid_at")) if isinstance(transitions, Mapping) else None
        )
        attempt = invoice.get("attempt_count")
        payment = PaymentInfo(
            # A failed attempt gets its own reference, so the later success of the same
            # invoice is not taken for a duplicate of the failure.
            provider_ref=f"{invoice_id}#attempt-{attempt}" if failed else invoice_id,
            amount=amount,
            status="failed" if failed else "succeeded",
            checkout_id=checkout_id,
            provider_subscription_id=sub_id,
            customer_id=customer_id,
            provider_customer_id=ids["provider_customer_id"],
            received_at=paid_at or occurred_at,
            details={"invoice": invoice_id, "billing_reason": invoice.get("billing_reason")},
        )
        return payment, ids

    async def invoice_paid(
        self, invoice: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``invoice.paid``: money collected for a subscription period (zero: nothing)."""
        payment, ids = self._invoice_payment(invoice, occurred_at, failed=False)
        mirrored = await self.invoice_changed(invoice, occurred_at)
        if payment is None or payment.amount.minor <= 0:
            self._log.info("stripe invoice %s paid nothing: no payment", invoice.get("id"))
            return mirrored
        return [
            BillingEvent(EventKind.PAYMENT_SUCCEEDED, occurred_at, payment=payment, **ids),
            *mirrored,
        ]

    async def invoice_payment_failed(
        self, invoice: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        payment, ids = self._invoice_payment(invoice, occurred_at, failed=True)
        mirrored = await self.invoice_changed(invoice, occurred_at)
        if payment is None:
            return mirrored
        return [
            BillingEvent(EventKind.PAYMENT_FAILED, occurred_at, payment=payment, **ids),
            *mirrored,
        ]

    async def invoice_changed(
        self, invoice: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``invoice.*``: the invoice as it stands, mirrored by the core (number, hosted page,
        PDF and amounts as Stripe computed them)."""
        mirrored = invoice_mirror(invoice, self._invoice_subscription(invoice))
        if mirrored is None:
            return []
        return [
            BillingEvent(
                EventKind.INVOICE_UPDATED,
                occurred_at,
                provider_customer_id=mirrored.provider_customer_id,
                customer_id=mirrored.customer_id,
                invoice=mirrored,
            )
        ]

    async def charge_refunded(
        self, charge: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``charge.refunded``: each refund of the charge (listed by the API unless the event
        carries them all), so that the core records each one once, whichever of Stripe's
        events about it comes first."""
        refunded = money_from_minor(charge.get("amount_refunded"), charge.get("currency"))
        if refunded is None:
            return []
        ref = await self._payment_ref_of_charge(charge)
        listed = charge.get("refunds")
        refunds: Sequence[Mapping[str, Any]]
        if isinstance(listed, Mapping) and listed.get("has_more") is False:
            data = listed.get("data")
            refunds = [r for r in data if isinstance(r, Mapping)] if isinstance(data, list) else []
        else:  # since 2022-11-15 a charge no longer embeds its refunds
            refunds = await self._api().list_refunds({"charge": charge.get("id"), "limit": 100})
        events = [self._refund_event(r, ref, occurred_at, total=refunded) for r in refunds]
        found = [e for e in events if e is not None]
        if found or refunds:
            return found
        # No refund listed (should not happen): the total still counts.
        return [
            BillingEvent(
                EventKind.REFUND_SUCCEEDED,
                occurred_at,
                provider_customer_id=object_id(charge.get("customer")),
                refund=RefundInfo(payment_provider_ref=ref, amount_refunded=refunded),
            )
        ]

    async def charge_disputed(
        self, dispute: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``charge.dispute.created`` / ``.updated`` / ``.closed``: the dispute as it stands,
        its outcome read from its ``status`` (not from the event type), so deliveries in any
        order end in the same state."""
        dispute_id = object_id(dispute.get("id"))
        charge = dispute.get("charge")
        if dispute_id is None or object_id(charge) is None:
            raise WebhookPayloadError(f"stripe dispute {dispute_id} names no charge")
        if not isinstance(charge, Mapping):
            charge = {"id": charge, "payment_intent": dispute.get("payment_intent")}
        status = dispute.get("status")
        reason = dispute.get("reason")
        info = DisputeInfo(
            payment_provider_ref=await self._payment_ref_of_charge(charge),
            provider_dispute_id=dispute_id,
            status=_DISPUTE_OUTCOMES.get(str(status), "open"),
            amount=money_from_minor(dispute.get("amount"), dispute.get("currency")),
            reason=reason if isinstance(reason, str) else None,
        )
        return [BillingEvent(EventKind.DISPUTE_UPDATED, occurred_at, dispute=info)]

    async def refund_changed(
        self, refund: Mapping[str, Any], occurred_at: datetime
    ) -> list[BillingEvent]:
        """``refund.created`` / ``refund.updated`` / ``refund.failed`` /
        ``charge.refund.updated``: one refund, by its status."""
        if refund.get("object") not in (None, "refund"):
            return []
        ref = await self._payment_ref_of_charge(
            {"id": object_id(refund.get("charge")), "payment_intent": refund.get("payment_intent")}
        )
        event = self._refund_event(refund, ref, occurred_at)
        return [event] if event is not None else []

    @staticmethod
    def _refund_event(
        refund: Mapping[str, Any], ref: str, occurred_at: datetime, *, total: Money | None = None
    ) -> BillingEvent | None:
        """``refund.succeeded`` / ``refund.failed`` for one Stripe refund (``None`` while it
        is pending), with our refund id when we made it."""
        status = refund.get("status")
        if status == "succeeded":
            kind = EventKind.REFUND_SUCCEEDED
        elif status in ("failed", "canceled"):
            kind = EventKind.REFUND_FAILED
        else:
            return None
        ours = metadata_of(refund).get(METADATA_REFUND_ID)
        reason = refund.get("reason")
        info = RefundInfo(
            payment_provider_ref=ref,
            amount_refunded=total,
            provider_refund_id=object_id(refund.get("id")),
            amount=money_from_minor(refund.get("amount"), refund.get("currency")),
            refund_id=ours if isinstance(ours, str) else None,
            reason=reason if isinstance(reason, str) else None,
        )
        return BillingEvent(kind, occurred_at, refund=info)

    async def _payment_ref_of_charge(self, charge: Mapping[str, Any]) -> str:
        """The ``PaymentInfo.provider_ref`` we recorded for the money this charge moved:
        the invoice id for subscription invoices, else the payment intent (one-time
        checkouts), else the charge."""
        invoice_id = object_id(charge.get("invoice"))  # before 2025-03-31 only
        if invoice_id is not None:
            return invoice_id
        intent = object_id(charge.get("payment_intent"))
        if intent is None:
            return str(charge.get("id"))
        payments = await self._api().list_invoice_payments(
            {"payment": {"type": "payment_intent", "payment_intent": intent}}
        )
        for item in payments:
            found = object_id(item.get("invoice"))
            if found is not None:
                return found
        return intent
