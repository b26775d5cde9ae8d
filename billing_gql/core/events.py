"""The domain events billing-gql emits about its own objects (``checkout.completed``,
``subscription.past_due``, ``payment.succeeded`` …): one builder per object, so every emitter
(the engine, the subscription operations, the worker's sweeps) sends the same ``data``."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime

from billing_gql.core.checkout import Checkout
from billing_gql.core.invoices import Invoice
from billing_gql.core.payments import Payment
from billing_gql.core.refunds import Refund
from billing_gql.core.subscriptions import Subscription
from billing_gql.money import Money
from billing_gql.plugins.types import DomainEvent

__all__ = [
    "checkout_event",
    "dispute_event",
    "invoice_event",
    "payment_event",
    "refund_event",
    "subscription_event",
]


def _event(kind: str, occurred_at: datetime, data: dict[str, object]) -> DomainEvent:
    return DomainEvent(id=str(uuid.uuid4()), type=kind, occurred_at=occurred_at, data=data)


def _id(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


def checkout_event(kind: str, checkout: Checkout, occurred_at: datetime) -> DomainEvent:
    """The domain event announcing a change of ``checkout`` (``checkout.completed`` …)."""
    return _event(
        kind,
        occurred_at,
        {
            "checkout_id": str(checkout.id),
            "customer_id": str(checkout.customer_id),
            "status": checkout.status,
            "purpose": checkout.purpose,
            "provider": checkout.provider,
            "amount": {"amount": checkout.amount.amount, "currency": checkout.currency},
            "amount_paid": {"amount": checkout.amount_paid.amount, "currency": checkout.currency},
            "subscription_id": _id(checkout.subscription_id),
        },
    )


def subscription_event(
    kind: str, sub: Subscription, occurred_at: datetime, **extra: object
) -> DomainEvent:
    """The domain event announcing a change of ``sub``; ``extra``: more data (e.g. the
    ``previous_status`` a sweep moved it from)."""
    return _event(
        kind,
        occurred_at,
        {
            "subscription_id": str(sub.id),
            "customer_id": str(sub.customer_id),
            "plan_id": str(sub.plan_id),
            "provider": sub.provider,
            "status": sub.status,
            "cancel_at_period_end": sub.cancel_at_period_end,
            "current_period_start": sub.current_period_start.isoformat()
            if sub.current_period_start
            else None,
            "current_period_end": sub.current_period_end.isoformat()
            if sub.current_period_end
            else None,
            **extra,
        },
    )


def payment_event(kind: str, payment: Payment, occurred_at: datetime) -> DomainEvent:
    """The domain event announcing money recorded or changed (``payment.succeeded`` …)."""
    return _event(
        kind,
        occurred_at,
        {
            "payment_id": str(payment.id),
            "provider": payment.provider,
            "provider_ref": payment.provider_ref,
            "status": payment.status,
            "amount": {"amount": payment.amount.amount, "currency": payment.currency},
            "checkout_id": _id(payment.checkout_id),
            "customer_id": _id(payment.customer_id),
            "subscription_id": _id(payment.subscription_id),
            **_unmatched(payment),
        },
    )


def refund_event(payment: Payment, refund: Refund, occurred_at: datetime) -> DomainEvent:
    """``payment.refunded``: the payment (its refunded total in ``amount_refunded``) and the
    refund that went through (once per refund)."""
    event = payment_event("payment.refunded", payment, occurred_at)
    return replace(
        event,
        data={
            **event.data,
            "amount_refunded": {
                "amount": Money(payment.refunded_minor, payment.currency).amount,
                "currency": payment.currency,
            },
            "refund": {
                "refund_id": str(refund.id),
                "amount": {"amount": refund.amount.amount, "currency": refund.currency},
                "reason": refund.reason,
                "origin": refund.origin,
                "provider_refund_id": refund.provider_refund_id,
                "reference": refund.reference,
            },
        },
    )


def _unmatched(payment: Payment) -> dict[str, object]:
    """Why a card provider's completion kept its money unmatched, and the checkout it named
    (``reason``, ``claimed_checkout_id``); nothing for other payments."""
    details = payment.details or {}
    if payment.status != "unmatched" or "unmatched_reason" not in details:
        return {}
    return {
        "reason": details["unmatched_reason"],
        "claimed_checkout_id": details.get("claimed_checkout_id"),
    }


def dispute_event(payment: Payment, occurred_at: datetime) -> DomainEvent:
    """``payment.disputed``: the payment's dispute was opened or closed (``status``:
    ``disputed``, ``dispute_won`` or ``dispute_lost``); ``amount_refunded`` is the whole
    amount once a dispute is lost, and ``dispute`` the provider's dispute as last seen."""
    event = payment_event("payment.disputed", payment, occurred_at)
    details = payment.details or {}
    data = {
        **event.data,
        "amount_refunded": {
            "amount": Money(payment.refunded_minor, payment.currency).amount,
            "currency": payment.currency,
        },
        "dispute": details.get("dispute"),
    }
    return DomainEvent(id=event.id, type=event.type, occurred_at=occurred_at, data=data)


def invoice_event(kind: str, invoice: Invoice, occurred_at: datetime) -> DomainEvent:
    """The domain event announcing a change of ``invoice`` (``invoice.created``,
    ``invoice.finalized``, ``invoice.paid``, ``invoice.voided``)."""

    def money(minor: int) -> dict[str, str]:
        return {"amount": invoice.money(minor).amount, "currency": invoice.currency}

    return _event(
        kind,
        occurred_at,
        {
            "invoice_id": str(invoice.id),
            "number": invoice.number,
            "kind": invoice.kind.value,
            "status": invoice.status.value,
            "customer_id": _id(invoice.customer_id),
            "subscription_id": _id(invoice.subscription_id),
            "checkout_id": _id(invoice.checkout_id),
            "provider": invoice.provider,
            "provider_invoice_id": invoice.provider_invoice_id,
            "total": money(invoice.total_minor),
            "amount_paid": money(invoice.amount_paid_minor),
            "amount_due": money(invoice.amount_due_minor),
        },
    )
