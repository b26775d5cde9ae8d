"""Stripe objects (as JSON dicts) turned into billing-gql's normalized values.

Shapes follow API version ``2025-03-31.basil`` and later (periods on subscription items,
``invoice.parent.subscription_details``); the older shapes are accepted as a fallback because a
webhook endpoint renders events at its own API version, which the dashboard may hold back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from billing_gql import (
    SubscriptionSnapshot,
    SubscriptionStatus,
    metadata_of,
    our_ids,
)

__all__ = [
    "STATUS",
    "first_item",
    "object_id",
    "subscription_snapshot",
    "subscription_status",
    "timestamp",
]

STATUS: Mapping[str, SubscriptionStatus] = {
    "incomplete": SubscriptionStatus.INCOMPLETE,
    "incomplete_expired": SubscriptionStatus.EXPIRED,
    "trialing": SubscriptionStatus.TRIALING,
    "active": SubscriptionStatus.ACTIVE,
    "past_due": SubscriptionStatus.PAST_DUE,
    # Stripe: "revoke access when the subscription is unpaid" (retries exhausted); it can
    # still become active if the open invoice is paid, which a later snapshot then says.
    "unpaid": SubscriptionStatus.EXPIRED,
    "canceled": SubscriptionStatus.CANCELED,
    "paused": SubscriptionStatus.PAUSED,
}


def timestamp(value: object) -> datetime | None:
    """A Stripe Unix timestamp as an aware UTC datetime (``None`` stays ``None``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(int(value), UTC)


def object_id(value: object) -> str | None:
    """The id of an expandable field: a plain id, or an expanded object's ``id``."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        inner = value.get("id")
        return inner if isinstance(inner, str) else None
    return None


def first_item(sub: Mapping[str, Any]) -> Mapping[str, Any]:
    """The subscription's plan item, else ``{}``: its first item that is not metered (a plan
    with usage charges adds one metered item per charge; the plan's price is the licensed
    one, which carries the quantity), else its first item."""
    items = sub.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    found = [i for i in data if isinstance(i, Mapping)] if isinstance(data, list) else []
    for item in found:
        price = item.get("price")
        recurring = price.get("recurring") if isinstance(price, Mapping) else None
        if not (isinstance(recurring, Mapping) and recurring.get("usage_type") == "metered"):
            return item
    return found[0] if found else {}


def subscription_status(sub: Mapping[str, Any]) -> SubscriptionStatus:
    """Our status for a Stripe subscription.

    ``pause_collection`` set on a live subscription is how ``pauseSubscription`` pauses at
    Stripe (invoices are voided until it is cleared), so it reads as PAUSED.
    """
    raw = sub.get("status")
    status = STATUS.get(raw if isinstance(raw, str) else "", SubscriptionStatus.INCOMPLETE)
    paused = isinstance(sub.get("pause_collection"), Mapping)
    if paused and status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING):
        return SubscriptionStatus.PAUSED
    return status


def subscription_snapshot(
    sub: Mapping[str, Any], *, updated_at: datetime | None = None
) -> SubscriptionSnapshot:
    """A full :class:`SubscriptionSnapshot` of a Stripe subscription object.

    ``updated_at``: Stripe's time at which the object was read (the API answer's ``Date``
    header), for objects from API answers; a webhook's object leaves it ``None``, the event's
    ``created`` being its time. (A subscription has no modification time of its own.)
    """
    item = first_item(sub)
    price = item.get("price")
    period_start = timestamp(item.get("current_period_start"))
    period_end = timestamp(item.get("current_period_end"))
    if period_start is None and period_end is None:
        # API versions before 2025-03-31 keep the period on the subscription itself.
        period_start = timestamp(sub.get("current_period_start"))
        period_end = timestamp(sub.get("current_period_end"))
    cancel_at = timestamp(sub.get("cancel_at"))
    # Newer dashboards schedule "cancel at period end" as cancel_at = the period's end.
    at_period_end = bool(sub.get("cancel_at_period_end")) or (
        cancel_at is not None and period_end is not None and cancel_at == period_end
    )
    checkout_id, customer_id, subscription_id = our_ids(metadata_of(sub))
    quantity = item.get("quantity")
    currency = sub.get("currency")
    return SubscriptionSnapshot(
        provider_subscription_id=str(sub["id"]),
        status=subscription_status(sub),
        current_period_start=period_start,
        current_period_end=period_end,
        trial_end=timestamp(sub.get("trial_end")),
        cancel_at_period_end=at_period_end,
        canceled_at=timestamp(sub.get("canceled_at")),
        ended_at=timestamp(sub.get("ended_at")),
        plan_ref=object_id(price),
        quantity=quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else None,
        currency=currency.upper() if isinstance(currency, str) else None,
        provider_customer_id=object_id(sub.get("customer")),
        checkout_id=checkout_id,
        customer_id=customer_id,
        subscription_id=subscription_id,
        updated_at=updated_at,
    )
