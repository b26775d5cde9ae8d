"""Invoice values as services return them (docs/api.md#invoices)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from billing_gql.core.usage import InvoiceLine
from billing_gql.money import Money

__all__ = [
    "ITEM_LINE_KINDS",
    "Invoice",
    "InvoiceKind",
    "InvoiceLine",
    "InvoiceLineKind",
    "InvoiceStatus",
    "invoice_from_row",
    "line_from_row",
]


class InvoiceStatus(StrEnum):
    """``Invoice.status``; the DB constraint ``invoices_status_check`` lists the same values."""

    DRAFT = "DRAFT"
    OPEN = "OPEN"
    PAID = "PAID"
    VOID = "VOID"
    UNCOLLECTIBLE = "UNCOLLECTIBLE"


class InvoiceLineKind(StrEnum):
    """``InvoiceLine.kind`` (invoices and ``invoicePreview`` alike)."""

    PLAN = "PLAN"
    USAGE = "USAGE"
    PRORATION = "PRORATION"
    DISCOUNT = "DISCOUNT"
    TAX = "TAX"
    CREDIT = "CREDIT"
    ONE_TIME = "ONE_TIME"


class InvoiceKind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"


ITEM_LINE_KINDS = {
    "proration": InvoiceLineKind.PRORATION,
    "credit": InvoiceLineKind.CREDIT,
    "adjustment": InvoiceLineKind.ONE_TIME,
    "usage": InvoiceLineKind.USAGE,
}
"""``invoice_items.kind`` → the line kind it shows as."""


@dataclass(frozen=True)
class Invoice:
    id: UUID
    number: str | None
    kind: InvoiceKind
    status: InvoiceStatus
    customer_id: UUID | None
    subscription_id: UUID | None
    checkout_id: UUID | None
    payment_id: UUID | None
    credit_of: UUID | None
    currency: str
    period_start: datetime | None
    period_end: datetime | None
    issued_at: datetime | None
    due_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    subtotal_minor: int
    discount_minor: int
    tax_minor: int
    total_minor: int
    amount_paid_minor: int
    amount_due_minor: int
    provider: str
    provider_invoice_id: str | None
    hosted_url: str | None
    provider_pdf_url: str | None
    paid_provider: str | None
    paid_reference: str | None
    created_at: datetime
    updated_at: datetime
    lines: tuple[InvoiceLine, ...] = field(default=())

    @property
    def mirrored(self) -> bool:
        """A provider's invoice (Stripe, Polar), not ours."""
        return self.provider_invoice_id is not None

    def money(self, minor: int) -> Money:
        return Money(minor, self.currency)


def invoice_from_row(row: Any, lines: tuple[InvoiceLine, ...] = ()) -> Invoice:
    return Invoice(
        id=row["id"],
        number=row["number"],
        kind=InvoiceKind(row["kind"]),
        status=InvoiceStatus(row["status"]),
        customer_id=row["customer_id"],
        subscription_id=row["subscription_id"],
        checkout_id=row["checkout_id"],
        payment_id=row["payment_id"],
        credit_of=row["credit_of"],
        currency=row["currency"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        issued_at=row["issued_at"],
        due_at=row["due_at"],
        paid_at=row["paid_at"],
        voided_at=row["voided_at"],
        subtotal_minor=row["subtotal_minor"],
        discount_minor=row["discount_minor"],
        tax_minor=row["tax_minor"],
        total_minor=row["total_minor"],
        amount_paid_minor=row["amount_paid_minor"],
        amount_due_minor=row["amount_due_minor"],
        provider=row["provider"],
        provider_invoice_id=row["provider_invoice_id"],
        hosted_url=row["hosted_url"],
        provider_pdf_url=row["provider_pdf_url"],
        paid_provider=row["paid_provider"],
        paid_reference=row["paid_reference"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        lines=lines,
    )


def line_from_row(row: Any, currency: str) -> InvoiceLine:
    return InvoiceLine(
        description=row["description"],
        quantity=Decimal(row["quantity"]),
        amount=Money(row["amount_minor"], currency),
        kind=row["kind"],
        unit_amount_minor=row["unit_amount_minor"],
        period_start=row["period_start"],
        period_end=row["period_end"],
    )
