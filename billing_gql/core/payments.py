"""Payment values as services return them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from billing_gql.money import Money


class PaymentStatus(StrEnum):
    """``Payment.status`` in the schema (the DB constraint ``payments_status_check`` lists the
    same values)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"
    UNMATCHED = "unmatched"
    FLAGGED = "flagged"
    """Kept for operators, never counted (see ``details['flag']``)."""
    DISPUTED = "disputed"
    """A chargeback is open (``details['dispute']``)."""
    DISPUTE_WON = "dispute_won"
    DISPUTE_LOST = "dispute_lost"
    """The money went back to the buyer: ``refunded_minor`` is the whole amount."""


DISPUTE_STATUSES = (PaymentStatus.DISPUTED, PaymentStatus.DISPUTE_WON, PaymentStatus.DISPUTE_LOST)
"""A payment in one of these keeps it when a refund is reported (its dispute says more)."""


@dataclass(frozen=True)
class Payment:
    id: UUID
    provider: str
    provider_ref: str | None
    status: PaymentStatus
    amount_minor: int
    refunded_minor: int
    currency: str
    checkout_id: UUID | None
    customer_id: UUID | None
    subscription_id: UUID | None
    reference: str | None
    details: dict[str, Any] | None
    received_at: datetime
    created_at: datetime

    @property
    def amount(self) -> Money:
        return Money(self.amount_minor, self.currency)


def payment_from_row(row: Any) -> Payment:
    return Payment(
        id=row["id"],
        provider=row["provider"],
        provider_ref=row["provider_ref"],
        status=PaymentStatus(row["status"]),
        amount_minor=row["amount_minor"],
        refunded_minor=row["refunded_minor"],
        currency=row["currency"],
        checkout_id=row["checkout_id"],
        customer_id=row["customer_id"],
        subscription_id=row["subscription_id"],
        reference=row["reference"],
        details=row["details"],
        received_at=row["received_at"],
        created_at=row["created_at"],
    )
