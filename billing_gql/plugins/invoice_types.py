"""The normalized provider invoice a plugin reports (``BillingEvent.invoice``); re-exported by
:mod:`billing_gql.plugins.types`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billing_gql.money import Money

__all__ = ["ProviderInvoice", "ProviderInvoiceLine"]


@dataclass(frozen=True)
class ProviderInvoiceLine:
    """A line of a provider's invoice."""

    description: str
    amount: Money
    kind: str = "PLAN"
    """An ``InvoiceLineKind`` name: PLAN, USAGE, PRORATION, DISCOUNT, TAX, CREDIT, ONE_TIME."""
    quantity: Decimal = Decimal(1)
    unit_amount: Money | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None


@dataclass(frozen=True)
class ProviderInvoice:
    """A provider's invoice (a Stripe invoice, a Polar order) as it stands: the core mirrors
    it (its id, number, URLs and amounts as the provider computed them, never recomputed)."""

    provider_invoice_id: str
    status: str
    """DRAFT, OPEN, PAID, VOID or UNCOLLECTIBLE."""
    total: Money
    subtotal: Money
    amount_paid: Money
    amount_due: Money
    discount: Money | None = None
    tax: Money | None = None
    number: str | None = None
    hosted_url: str | None = None
    pdf_url: str | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    issued_at: datetime | None = None
    due_at: datetime | None = None
    paid_at: datetime | None = None
    provider_subscription_id: str | None = None
    provider_customer_id: str | None = None
    customer_id: str | None = None
    """Our customer id, from metadata."""
    checkout_id: str | None = None
    """Our checkout id, when the invoice paid one (the first invoice of a subscription)."""
    lines: Sequence[ProviderInvoiceLine] = ()
