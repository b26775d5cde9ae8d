"""Refund values as services return them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from billing_gql.money import Money


class RefundStatus(StrEnum):
    """``Refund.status`` in the schema (the DB constraint ``refunds_status_check`` lists the
    same values)."""

    PENDING = "pending"
    """Its amount is reserved; the provider has not said yet that the money went back."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """The provider refused it or could not be reached: nothing was refunded, nothing held."""


@dataclass(frozen=True)
class Refund:
    id: UUID
    payment_id: UUID
    provider: str
    amount_minor: int
    currency: str
    reason: str | None
    status: RefundStatus
    origin: str
    """``api`` (``refundPayment``) or ``provider`` (reported by the provider)."""
    provider_refund_id: str | None
    reference: str | None
    idempotency_key: str | None
    revoke_access: bool
    failure_reason: str | None
    credit_note_id: UUID | None
    created_at: datetime
    updated_at: datetime

    @property
    def amount(self) -> Money:
        return Money(self.amount_minor, self.currency)


def refund_from_row(row: Any) -> Refund:
    return Refund(
        id=row["id"],
        payment_id=row["payment_id"],
        provider=row["provider"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        reason=row["reason"],
        status=RefundStatus(row["status"]),
        origin=row["origin"],
        provider_refund_id=row["provider_refund_id"],
        reference=row["reference"],
        idempotency_key=row["idempotency_key"],
        revoke_access=row["revoke_access"],
        failure_reason=row["failure_reason"],
        credit_note_id=row["credit_note_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
