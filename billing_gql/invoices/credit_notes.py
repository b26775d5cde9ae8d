"""Credit notes: the document of a refund, numbered from the invoices' sequence.

A credit note is an :class:`~billing_gql.core.invoices.Invoice` of kind ``credit_note`` with a
negative total and one CREDIT line naming the invoice it credits (``credit_of``: the live
invoice of the refunded payment's checkout, or the provider invoice the payment paid). There is
exactly one per refunded increment of a payment: the unique key (payment, refunded total it
brings the payment to) makes a repeated or concurrent call a no-op.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from billing_gql.core.events import invoice_event
from billing_gql.core.invoices import Invoice, InvoiceLine, InvoiceLineKind, invoice_from_row
from billing_gql.invoices.service import finalize_invoice
from billing_gql.money import Money
from billing_gql.plugins.types import DomainEvent
from billing_gql.store.invoices_sql import (
    insert_credit_note_row,
    insert_invoice_lines,
    settle_credit_note_row,
)

__all__ = ["issue_credit_note"]


async def _original(conn: asyncpg.Connection, payment: asyncpg.Record) -> asyncpg.Record | None:
    """The invoice the payment paid: its checkout's (the paid one first), else the provider
    invoice whose id is the payment's reference at the provider."""
    if payment["checkout_id"] is not None:
        found = await conn.fetchrow(
            "SELECT * FROM invoices WHERE checkout_id = $1 AND kind = 'invoice' "
            "ORDER BY (status = 'PAID') DESC, created_at DESC LIMIT 1",
            payment["checkout_id"],
        )
        if found is not None:
            return found
    if payment["provider_ref"] is None:
        return None
    return await conn.fetchrow(
        "SELECT * FROM invoices WHERE provider = $1 AND provider_invoice_id = $2",
        payment["provider"],
        payment["provider_ref"],
    )


async def issue_credit_note(
    conn: asyncpg.Connection,
    *,
    prefix: str,
    payment_id: UUID,
    refunded_before_minor: int,
    refunded_total_minor: int,
    now: datetime,
    reason: str | None = None,
) -> tuple[Invoice | None, list[DomainEvent]]:
    """Issue the credit note of a refund of ``payment_id`` that took the payment's refunded
    total from ``refunded_before_minor`` to ``refunded_total_minor`` (in the caller's
    transaction, the payment row locked by the caller).

    :param prefix: the invoice number prefix (``settings.invoices.prefix``).
    :param reason: printed on the line (e.g. the refund's reason).
    :returns: the credit note (finalized, numbered, PAID: the money went back) and its events
        (``invoice.created``, ``invoice.finalized``, ``invoice.paid``); ``(None, [])`` when
        that increment has its credit note already, or nothing was refunded.
    """
    increment = refunded_total_minor - refunded_before_minor
    if increment <= 0:
        return None, []
    payment = await conn.fetchrow("SELECT * FROM payments WHERE id = $1", payment_id)
    if payment is None:
        raise ValueError(f"no payment {payment_id}")
    original = await _original(conn, payment)
    currency = payment["currency"]
    credited = f" of invoice {original['number']}" if original and original["number"] else ""
    line = InvoiceLine(
        description=f"Refund{credited}" + (f": {reason}" if reason else ""),
        quantity=Decimal(1),
        amount=Money(-increment, currency),
        kind=InvoiceLineKind.CREDIT,
    )
    row = await insert_credit_note_row(
        conn,
        {
            "kind": "credit_note",
            "status": "DRAFT",
            "customer_id": payment["customer_id"],
            "subscription_id": payment["subscription_id"],
            "checkout_id": payment["checkout_id"],
            "payment_id": payment_id,
            "credit_of": original["id"] if original else None,
            "refunded_to_minor": refunded_total_minor,
            "currency": currency,
            "period_start": original["period_start"] if original else None,
            "period_end": original["period_end"] if original else None,
            "subtotal_minor": -increment,
            "total_minor": -increment,
            "amount_paid_minor": -increment,
            "amount_due_minor": 0,
            "paid_at": now,
            "paid_provider": payment["provider"],
            "paid_reference": payment["provider_ref"] or payment["reference"],
            "provider": payment["provider"],
            "created_at": now,
            "updated_at": now,
        },
    )
    if row is None:
        return None, []
    await insert_invoice_lines(conn, row["id"], [line])
    events = [invoice_event("invoice.created", invoice_from_row(row, (line,)), now)]
    row = await finalize_invoice(conn, prefix, row["id"], now)
    events.append(invoice_event("invoice.finalized", invoice_from_row(row, (line,)), now))
    # The money went back already: the note is settled at once.
    row = await settle_credit_note_row(conn, row["id"], now)
    note = invoice_from_row(row, (line,))
    events.append(invoice_event("invoice.paid", note, now))
    return note, events
