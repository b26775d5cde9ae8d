"""Polar objects (as JSON dicts) turned into billing-gql's normalized values.

Shapes are those of Polar's OpenAPI ``2026-10`` (``Subscription``, ``Order``,
``BenefitGrant…Webhook``, ``CustomerStateBenefitGrant``). Times are ISO-8601 strings; amounts
are integers in the currency's smallest unit; currencies are lower-case.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from billing_gql import (
    ProviderGrant,
    SubscriptionSnapshot,
    SubscriptionStatus,
    metadata_of,
    our_ids,
)

__all__ = [
    "LIVE",
    "STATUS",
    "customer_external_id",
    "grant_from_state",
    "grant_from_webhook",
    "object_id",
    "parse_time",
    "state_time",
    "subscription_snapshot",
    "subscription_status",
]

STATUS: Mapping[str, SubscriptionStatus] = {
    "incomplete": SubscriptionStatus.INCOMPLETE,
    # The first payment never succeeded and Polar gave up: nothing was ever granted.
    "incomplete_expired": SubscriptionStatus.EXPIRED,
    "trialing": SubscriptionStatus.TRIALING,
    "active": SubscriptionStatus.ACTIVE,
    "past_due": SubscriptionStatus.PAST_DUE,
    "canceled": SubscriptionStatus.CANCELED,
    # Payment retries are exhausted and Polar revokes the subscription (subscription.revoked):
    # access ends, as for an expired one.
    "unpaid": SubscriptionStatus.EXPIRED,
    "paused": SubscriptionStatus.PAUSED,
}

LIVE = frozenset(
    {SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE}
)


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 string as an aware UTC datetime (naive values are taken as UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def object_id(value: object) -> str | None:
    """A non-empty string id, else ``None``."""
    return value if isinstance(value, str) and value else None


def customer_external_id(obj: Mapping[str, Any]) -> str | None:
    """The ``external_id`` of the embedded ``customer`` (our customer's externalId)."""
    customer = obj.get("customer")
    if isinstance(customer, Mapping):
        return object_id(customer.get("external_id"))
    return object_id(obj.get("external_customer_id"))


def subscription_status(sub: Mapping[str, Any]) -> SubscriptionStatus:
    """Our status for a Polar subscription (an unknown status reads as INCOMPLETE)."""
    raw = sub.get("status")
    return STATUS.get(raw if isinstance(raw, str) else "", SubscriptionStatus.INCOMPLETE)


def subscription_snapshot(
    sub: Mapping[str, Any], *, revoked: bool = False, read_at: datetime | None = None
) -> SubscriptionSnapshot:
    """A full :class:`SubscriptionSnapshot` of a Polar ``Subscription``.

    ``revoked`` (a ``subscription.revoked`` delivery): access is lost now, whatever status
    the object still shows. ``read_at``: for an object from an API answer, Polar's time of
    that answer (its ``Date`` header); the snapshot's ``updated_at`` is then the later of it
    and the object's ``modified_at`` (the ``Date`` header has whole seconds). A webhook's
    object leaves it unset: the envelope's ``timestamp`` dates it.
    """
    status = subscription_status(sub)
    ended_at = parse_time(sub.get("ended_at"))
    canceled_at = parse_time(sub.get("canceled_at"))
    if revoked and (status in LIVE or status == SubscriptionStatus.PAUSED):
        status = SubscriptionStatus.CANCELED
    if revoked:
        ended_at = ended_at or parse_time(sub.get("ends_at")) or parse_time(sub.get("modified_at"))
    checkout_id, customer_id, subscription_id = our_ids(metadata_of(sub))
    seats = sub.get("seats")
    currency = sub.get("currency")
    return SubscriptionSnapshot(
        provider_subscription_id=str(sub["id"]),
        status=status,
        current_period_start=parse_time(sub.get("current_period_start")),
        current_period_end=parse_time(sub.get("current_period_end")),
        trial_end=parse_time(sub.get("trial_end")),
        cancel_at_period_end=bool(sub.get("cancel_at_period_end"))
        and status not in (SubscriptionStatus.CANCELED, SubscriptionStatus.EXPIRED),
        canceled_at=canceled_at,
        ended_at=ended_at,
        plan_ref=object_id(sub.get("product_id")),
        quantity=seats if isinstance(seats, int) and not isinstance(seats, bool) else None,
        currency=currency.upper() if isinstance(currency, str) else None,
        provider_customer_id=object_id(sub.get("customer_id")),
        checkout_id=checkout_id,
        customer_id=customer_id,
        external_customer_id=customer_external_id(sub),
        subscription_id=subscription_id,
        updated_at=state_time(sub, read_at) if read_at is not None else None,
    )


def state_time(obj: Mapping[str, Any], read_at: datetime) -> datetime:
    """When an object read at ``read_at`` (Polar's ``Date`` header, whole seconds) was
    certainly in the state read: the later of that and its own ``modified_at``."""
    modified_at = parse_time(obj.get("modified_at"))
    return max(read_at, modified_at) if modified_at else read_at


def grant_from_webhook(grant: Mapping[str, Any], *, revoked: bool = False) -> ProviderGrant:
    """A :class:`ProviderGrant` of a ``BenefitGrant…Webhook`` object (``benefit_grant.*``)."""
    benefit = grant.get("benefit")
    benefit = benefit if isinstance(benefit, Mapping) else {}
    properties = grant.get("properties")
    granted = bool(grant.get("is_granted")) and not grant.get("is_revoked") and not revoked
    return ProviderGrant(
        grant_id=str(grant["id"]),
        benefit_id=str(grant.get("benefit_id") or benefit.get("id") or ""),
        benefit_type=str(benefit.get("type") or ""),
        granted=granted,
        provider_customer_id=object_id(grant.get("customer_id")),
        external_customer_id=customer_external_id(grant),
        provider_subscription_id=object_id(grant.get("subscription_id")),
        metadata=dict(metadata_of(benefit)),
        properties=dict(properties) if isinstance(properties, Mapping) else {},
    )


def grant_from_state(
    grant: Mapping[str, Any], *, provider_customer_id: str | None, external_customer_id: str | None
) -> ProviderGrant:
    """A :class:`ProviderGrant` of a ``CustomerStateBenefitGrant`` (a granted benefit in the
    customer state endpoint's ``granted_benefits``)."""
    meta = grant.get("benefit_metadata")
    properties = grant.get("properties")
    return ProviderGrant(
        grant_id=str(grant["id"]),
        benefit_id=str(grant.get("benefit_id") or ""),
        benefit_type=str(grant.get("benefit_type") or ""),
        granted=True,
        provider_customer_id=provider_customer_id,
        external_customer_id=external_customer_id,
        metadata=dict(meta) if isinstance(meta, Mapping) else {},
        properties=dict(properties) if isinstance(properties, Mapping) else {},
    )
