"""Money that went back to the buyer, as a provider reports it: refunds (``RefundInfo``) and
disputes, i.e. chargebacks (``DisputeInfo``), carried by ``BillingEvent.refund`` /
``BillingEvent.dispute``. Re-exported by :mod:`billing_gql.plugins.types`."""

from __future__ import annotations

from dataclasses import dataclass

from billing_gql.money import Money

__all__ = ["DisputeInfo", "RefundInfo"]


@dataclass(frozen=True)
class RefundInfo:
    """A refund of an earlier payment.

    Best, one refund: ``provider_refund_id`` and its ``amount`` (plus ``refund_id``, ours, when
    the refund was made through ``refundPayment``: read it from the provider's metadata,
    ``METADATA_REFUND_ID``); the core records each refund once, whichever events report it.
    A provider that only reports totals gives ``amount_refunded`` alone."""

    payment_provider_ref: str
    """``PaymentInfo.provider_ref`` of the refunded payment."""
    amount_refunded: Money | None = None
    """Total refunded so far on that payment (not this refund's increment)."""
    provider_refund_id: str | None = None
    """The provider's id of this refund (unique per provider)."""
    amount: Money | None = None
    """This refund's amount (required with ``provider_refund_id``)."""
    refund_id: str | None = None
    """Our refund id, from the provider's metadata (``METADATA_REFUND_ID``)."""
    reason: str | None = None


@dataclass(frozen=True)
class DisputeInfo:
    """A dispute (chargeback) of an earlier payment, as it stands."""

    payment_provider_ref: str
    """``PaymentInfo.provider_ref`` of the disputed payment."""
    provider_dispute_id: str
    status: str
    """``open`` (any state before its outcome), ``won`` or ``lost``. A closed dispute never
    reopens: a late ``open`` after ``won``/``lost`` changes nothing."""
    amount: Money | None = None
    """The disputed amount, when the provider says."""
    reason: str | None = None
    """The provider's reason (``fraudulent``, ``product_not_received`` …)."""
