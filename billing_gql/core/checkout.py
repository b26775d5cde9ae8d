"""Checkout values as services return them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from billing_gql.money import Money

OPEN = "OPEN"
COMPLETED = "COMPLETED"
EXPIRED = "EXPIRED"
FAILED = "FAILED"


class CheckoutPurpose(StrEnum):
    """What a checkout is for: ``Checkout.purpose`` in the schema (the DB constraint
    ``checkouts_purpose_check`` lists the same values)."""

    NEW = "new"
    """A first purchase."""
    RENEWAL = "renewal"
    """A push renewal of a subscription's next period."""
    INVOICE = "invoice"
    """Pending charges (prorations) of a subscription."""


@dataclass(frozen=True)
class Checkout:
    id: UUID
    customer_id: UUID
    plan_id: UUID
    provider: str
    status: str
    purpose: CheckoutPurpose
    currency: str
    quantity: int
    amount_minor: int
    amount_paid_minor: int
    refunded_minor: int
    url: str | None
    provider_checkout_id: str | None
    payment_reference: str | None
    bank_transfer: dict[str, Any] | None
    success_url: str | None
    cancel_url: str | None
    idempotency_key: str | None
    subscription_id: UUID | None
    error: str | None
    error_code: str | None
    error_field: list[str] | None
    """The field path the provider named for ``error`` (relative to the checkout's input)."""
    expires_at: datetime | None
    completed_at: datetime | None
    prepared_at: datetime | None
    created_at: datetime
    updated_at: datetime
    renews_from: datetime | None
    """A push renewal's period: the subscription's period end when it was issued."""
    paid_period_start: datetime | None
    """The period a paid renewal bought (null: none, or not paid)."""
    paid_period_end: datetime | None
    trial_days: int = 0
    """The trial this new purchase grants (0: none; a plan's trial is once per customer)."""

    @property
    def amount(self) -> Money:
        return Money(self.amount_minor, self.currency)

    @property
    def starts_trial(self) -> bool:
        """A first purchase whose trial is the first period: nothing is owed at completion
        (the renewal at the trial's end, or the provider's first invoice, collects the price)."""
        return self.purpose == CheckoutPurpose.NEW and self.trial_days > 0

    @property
    def amount_paid(self) -> Money:
        return Money(self.amount_paid_minor, self.currency)

    @property
    def amount_due(self) -> Money:
        """What remains to be paid (never negative)."""
        return Money(max(self.amount_minor - self.amount_paid_minor, 0), self.currency)


def checkout_from_row(row: Any) -> Checkout:
    return Checkout(
        id=row["id"],
        customer_id=row["customer_id"],
        plan_id=row["plan_id"],
        provider=row["provider"],
        status=row["status"],
        purpose=CheckoutPurpose(row["purpose"]),
        currency=row["currency"],
        quantity=row["quantity"],
        amount_minor=row["amount_minor"],
        amount_paid_minor=row["amount_paid_minor"],
        refunded_minor=row["refunded_minor"],
        url=row["url"],
        provider_checkout_id=row["provider_checkout_id"],
        payment_reference=row["payment_reference"],
        bank_transfer=row["bank_transfer"],
        success_url=row["success_url"],
        cancel_url=row["cancel_url"],
        idempotency_key=row["idempotency_key"],
        subscription_id=row["subscription_id"],
        error=row["error"],
        error_code=row["error_code"],
        error_field=list(row["error_field"]) if row["error_field"] is not None else None,
        expires_at=row["expires_at"],
        completed_at=row["completed_at"],
        prepared_at=row["prepared_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        renews_from=row["renews_from"],
        paid_period_start=row["paid_period_start"],
        paid_period_end=row["paid_period_end"],
        trial_days=row["trial_days"],
    )
