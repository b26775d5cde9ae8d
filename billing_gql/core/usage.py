"""Usage values as services return them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from billing_gql.core.catalog import ProviderRef
from billing_gql.money import Money


@dataclass(frozen=True)
class Meter:
    id: UUID
    code: str
    name: str
    aggregation: str
    property: str | None
    provider_refs: tuple[ProviderRef, ...]
    created_at: datetime

    def provider_ref(self, provider: str) -> str | None:
        """This meter's reference at ``provider`` (its currency-less one first)."""
        refs = [r for r in self.provider_refs if r.provider == provider]
        refs.sort(key=lambda r: r.currency is not None)
        return refs[0].ref if refs else None


@dataclass(frozen=True)
class RecordUsageResult:
    accepted: int
    """Events stored by this call."""
    duplicates: int
    """Events whose id was already stored (earlier, concurrently, or earlier in this batch)."""


@dataclass(frozen=True)
class Period:
    """A half-open time range ``start <= t < end``."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class UsageSummary:
    meter: str
    value: Decimal
    period: Period


@dataclass(frozen=True)
class InvoiceLine:
    """A line of an invoice or of ``invoicePreview``; ``kind`` is an ``InvoiceLineKind`` name
    (:class:`billing_gql.core.invoices.InvoiceLineKind`)."""

    description: str
    quantity: Decimal
    amount: Money
    kind: str = "PLAN"
    unit_amount_minor: int | None = None
    """The price of one unit in minor units, when the line has one (null: tiers, a unit price
    finer than the currency's minor unit, or a lump sum)."""
    period_start: datetime | None = None
    period_end: datetime | None = None


@dataclass(frozen=True)
class InvoicePreview:
    subscription_id: UUID
    currency: str
    period: Period
    lines: tuple[InvoiceLine, ...]
    subtotal: Money
    total: Money
