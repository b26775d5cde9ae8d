"""AcmePay objects (decoded JSON) turned into billing-gql's normalized values.

Every function here is pure: it reads a dict and returns a frozen dataclass of billing-gql's
public API, or raises :class:`~billing_gql.WebhookPayloadError` when a field it needs is
missing or malformed (a signed but unreadable event must not be taken for "nothing happened").
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from billing_gql import (
    BillingEvent,
    EventKind,
    Money,
    PaymentInfo,
    SubscriptionSnapshot,
    SubscriptionStatus,
    WebhookPayloadError,
    metadata_of,
    our_ids,
)

__all__ = [
    "STATUS",
    "checkout_event",
    "money",
    "object_id",
    "payment_info",
    "subscription_snapshot",
    "text",
    "timestamp",
]

STATUS: Mapping[str, SubscriptionStatus] = {
    "incomplete": SubscriptionStatus.INCOMPLETE,
    "trialing": SubscriptionStatus.TRIALING,
    "active": SubscriptionStatus.ACTIVE,
    "past_due": SubscriptionStatus.PAST_DUE,
    "canceled": SubscriptionStatus.CANCELED,
}
"""AcmePay subscription status → ours. AcmePay has no pause and no "unpaid" state: after its
last failed retry it cancels the subscription."""


def text(value: object) -> str | None:
    """A non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None


def timestamp(value: object, field: str = "time") -> datetime | None:
    """An AcmePay ISO 8601 time as an aware UTC datetime (``None`` stays ``None``)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebhookPayloadError(f"{field} is not an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise WebhookPayloadError(f"{field} is not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise WebhookPayloadError(f"{field} has no UTC offset: {value!r}")
    return parsed.astimezone(UTC)


def money(amount: object, currency: object, field: str = "amount") -> Money:
    """AcmePay's decimal string in major units and its currency, as :class:`~billing_gql.Money`
    (integer minor units; a float or too many decimals is refused)."""
    try:
        return Money.parse(amount, currency)
    except ValueError as exc:
        raise WebhookPayloadError(f"{field}: {exc}") from None


def object_id(value: object) -> str | None:
    """The id of a field AcmePay may expand: a plain id, or an expanded object's ``id``."""
    if isinstance(value, Mapping):
        return text(value.get("id"))
    return text(value)


def _required_id(obj: Mapping[str, Any], kind: str) -> str:
    found = text(obj.get("id"))
    if found is None:
        raise WebhookPayloadError(f"the {kind} has no id")
    return found


def subscription_snapshot(sub: Mapping[str, Any]) -> SubscriptionSnapshot:
    """The full state of an AcmePay ``subscription`` object, versioned by its ``updated_at``
    (AcmePay's time of that state): the core orders snapshots by it, so the answer to one of
    our operations outranks an older event still in flight, and a tie is re-fetched."""
    sub_id = _required_id(sub, "subscription")
    raw_status = sub.get("status")
    status = STATUS.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        raise WebhookPayloadError(f"subscription {sub_id} has an unknown status {raw_status!r}")
    checkout_id, customer_id, subscription_id = our_ids(metadata_of(sub))
    quantity = sub.get("quantity")
    currency = text(sub.get("currency"))
    return SubscriptionSnapshot(
        provider_subscription_id=sub_id,
        status=status,
        current_period_start=timestamp(sub.get("current_period_start"), "current_period_start"),
        current_period_end=timestamp(sub.get("current_period_end"), "current_period_end"),
        trial_end=timestamp(sub.get("trial_end"), "trial_end"),
        cancel_at_period_end=sub.get("cancel_at_period_end") is True,
        canceled_at=timestamp(sub.get("canceled_at"), "canceled_at"),
        ended_at=timestamp(sub.get("ended_at"), "ended_at"),
        plan_ref=object_id(sub.get("price")),
        quantity=quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else None,
        currency=currency.upper() if currency else None,
        provider_customer_id=object_id(sub.get("customer")),
        checkout_id=checkout_id,
        customer_id=customer_id,
        subscription_id=subscription_id,
        updated_at=timestamp(sub.get("updated_at"), "updated_at"),
    )


def payment_info(payment: Mapping[str, Any]) -> PaymentInfo:
    """An AcmePay ``payment`` as :class:`~billing_gql.PaymentInfo`.

    Only a payment that a checkout collected (its ``checkout`` is set) names our checkout: a
    renewal's payment carries the subscription's metadata too, which still holds the original
    checkout id, and must not be counted against that long-completed checkout.
    """
    payment_id = _required_id(payment, "payment")
    checkout_id, customer_id, _ = our_ids(metadata_of(payment))
    provider_checkout_id = object_id(payment.get("checkout"))
    checkout_payment = provider_checkout_id is not None
    status = payment.get("status")
    return PaymentInfo(
        provider_ref=payment_id,
        amount=money(payment.get("amount"), payment.get("currency"), f"payment {payment_id}"),
        status="failed" if status == "failed" else "succeeded",
        checkout_id=checkout_id if checkout_payment else None,
        provider_checkout_id=provider_checkout_id,
        provider_subscription_id=object_id(payment.get("subscription")),
        customer_id=customer_id,
        provider_customer_id=object_id(payment.get("customer")),
        received_at=timestamp(payment.get("created_at"), "created_at"),
        details={"reason": payment["reason"]} if text(payment.get("reason")) else {},
    )


def checkout_event(
    kind: EventKind,
    checkout: Mapping[str, Any],
    occurred_at: datetime,
    *,
    subscription: SubscriptionSnapshot | None = None,
    payment: PaymentInfo | None = None,
) -> BillingEvent:
    """A :class:`~billing_gql.BillingEvent` about an AcmePay ``checkout``, with every id it
    carries (ours from metadata, AcmePay's checkout and customer ids)."""
    checkout_id, customer_id, _ = our_ids(metadata_of(checkout))
    return BillingEvent(
        kind,
        occurred_at,
        checkout_id=checkout_id,
        provider_checkout_id=_required_id(checkout, "checkout"),
        customer_id=customer_id,
        provider_customer_id=object_id(checkout.get("customer")),
        subscription=subscription,
        payment=payment,
    )
