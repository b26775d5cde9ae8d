"""Mirroring card providers' invoices (Stripe invoices, Polar orders): stored once per
(provider, provider invoice id) with the provider's number, URLs and amounts, never
recomputed, and never regressed by an older delivery.

Statuses only move forward (DRAFT → OPEN → UNCOLLECTIBLE → PAID or VOID); within one status a
delivery applies only when it is newer than the state stored (the provider's time of the
fact). ``invoice.created``, ``invoice.finalized``, ``invoice.paid`` and ``invoice.voided`` fire
on the transition into each state, so once each.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.core.events import invoice_event
from billing_gql.core.invoices import Invoice, InvoiceLine, InvoiceStatus, invoice_from_row
from billing_gql.money import Money
from billing_gql.plugins.types import DomainEvent, ProviderInvoice
from billing_gql.store.invoices_sql import (
    insert_invoice_row,
    replace_invoice_lines,
    update_mirrored_invoice_row,
)

__all__ = ["mirror_provider_invoice"]

_RANK = {"DRAFT": 0, "OPEN": 1, "UNCOLLECTIBLE": 2, "PAID": 3, "VOID": 3}


def _minor(value: Money | None) -> int:
    return value.minor if value is not None else 0


def _values(info: ProviderInvoice, occurred_at: datetime) -> dict[str, Any]:
    return {
        "status": InvoiceStatus(info.status).value,
        "number": info.number,
        "currency": info.total.currency,
        "period_start": info.period_start,
        "period_end": info.period_end,
        "issued_at": info.issued_at,
        "due_at": info.due_at,
        "paid_at": info.paid_at,
        "subtotal_minor": info.subtotal.minor,
        "discount_minor": _minor(info.discount),
        "tax_minor": _minor(info.tax),
        "total_minor": info.total.minor,
        "amount_paid_minor": info.amount_paid.minor,
        "amount_due_minor": info.amount_due.minor,
        "hosted_url": info.hosted_url,
        "provider_pdf_url": info.pdf_url,
        "provider_updated_at": occurred_at,
    }


def _lines(info: ProviderInvoice) -> list[InvoiceLine]:
    return [
        InvoiceLine(
            description=line.description,
            quantity=line.quantity,
            amount=line.amount,
            kind=line.kind,
            unit_amount_minor=line.unit_amount.minor if line.unit_amount is not None else None,
            period_start=line.period_start,
            period_end=line.period_end,
        )
        for line in info.lines
    ]


def _transitions(old: str | None, invoice: Invoice, now: datetime) -> list[DomainEvent]:
    new = invoice.status.value
    events: list[DomainEvent] = []
    if old is None:
        events.append(invoice_event("invoice.created", invoice, now))
    if old in (None, "DRAFT") and new != "DRAFT":
        events.append(invoice_event("invoice.finalized", invoice, now))
    if new == "PAID" and old != "PAID":
        events.append(invoice_event("invoice.paid", invoice, now))
    if new == "VOID" and old != "VOID":
        events.append(invoice_event("invoice.voided", invoice, now))
    return events


async def mirror_provider_invoice(
    conn: asyncpg.Connection,
    provider: str,
    info: ProviderInvoice,
    *,
    customer_id: UUID | None,
    subscription_id: UUID | None,
    checkout_id: UUID | None,
    occurred_at: datetime,
    now: datetime,
) -> list[DomainEvent]:
    """Store or update the mirror of ``info`` (in the caller's transaction); its events."""
    existing = await conn.fetchrow(
        "SELECT * FROM invoices WHERE provider = $1 AND provider_invoice_id = $2 FOR UPDATE",
        provider,
        info.provider_invoice_id,
    )
    values = _values(info, occurred_at)
    lines = _lines(info)
    if existing is None:
        row = await insert_invoice_row(
            conn,
            {
                **values,
                "provider": provider,
                "provider_invoice_id": info.provider_invoice_id,
                "customer_id": customer_id,
                "subscription_id": subscription_id,
                "checkout_id": checkout_id,
                "created_at": now,
                "updated_at": now,
            },
        )
        await replace_invoice_lines(conn, row["id"], lines)
        return _transitions(None, invoice_from_row(row, tuple(lines)), now)
    old = existing["status"]
    rank, old_rank = _RANK[values["status"]], _RANK[old]
    stored_at = existing["provider_updated_at"]
    newer = rank > old_rank or (
        rank == old_rank
        and values["status"] == old
        and (stored_at is None or occurred_at > stored_at)
    )
    if not newer:
        return []
    row = await update_mirrored_invoice_row(
        conn,
        existing["id"],
        {
            **values,
            "customer_id": existing["customer_id"] or customer_id,
            "subscription_id": existing["subscription_id"] or subscription_id,
            "checkout_id": existing["checkout_id"] or checkout_id,
            "updated_at": now,
        },
    )
    if lines:
        await replace_invoice_lines(conn, row["id"], lines)
    return _transitions(old, invoice_from_row(row, tuple(lines)), now)
