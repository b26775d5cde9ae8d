"""What the core and a provider exchange to make a refund (``Provider.refund_payment``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from billing_gql.money import Money
from billing_gql.plugins.types import CustomerInfo

__all__ = ["RefundRequest", "RefundResult"]


@dataclass(frozen=True)
class RefundRequest:
    """A refund the core asks a provider to make (``Provider.refund_payment``)."""

    refund_id: str
    """Ours: send it in the provider's metadata (``metadata`` holds it) so that the provider's
    refund events name it."""
    payment_provider_ref: str
    """``PaymentInfo.provider_ref`` of the payment to refund, as the plugin reported it."""
    amount: Money
    """What to refund, in the payment's currency (at most what is left of it)."""
    idempotency_key: str
    """Stable for this refund: send it, so a retried call cannot refund twice."""
    reason: str | None = None
    """The operator's reason, free text."""
    payment_details: Mapping[str, Any] = field(default_factory=dict)
    """``PaymentInfo.details`` of the payment, as the plugin reported them."""
    customer: CustomerInfo | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Our ids (``METADATA_REFUND_ID`` …): send them with the refund."""


@dataclass(frozen=True)
class RefundResult:
    """What the provider answered a ``refund_payment`` with."""

    provider_refund_id: str
    status: str = "succeeded"
    """``succeeded`` (the money went back), ``pending`` (it will: a ``refund.succeeded``
    or ``refund.failed`` event says how it ended) or ``failed``."""
    failure_reason: str | None = None
