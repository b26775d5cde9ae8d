"""Our own invoices: one per amount a push checkout asks for (renewals, pending charges such as
prorations and usage billed in arrears, first purchases), numbered gaplessly when finalized.

- :func:`create_invoice` writes a DRAFT with its lines and, unless told otherwise, finalizes it
  at once (:func:`finalize_invoice`): the number ``<prefix>-<year>-<sequence>`` is taken from
  the (prefix, year) counter row in the same transaction, so a rollback gives it back and two
  finalizations never get one number;
- :func:`sync_checkout_invoice` keeps a checkout's invoice equal to what the checkout asks
  for: a finalized invoice is never edited, so when the checkout's lines change (usage added to
  a renewal, items taken by another checkout) it is voided and a new one issued;
- :func:`mark_checkout_invoice_paid` turns it into a receipt when the checkout completes;
- :func:`void_due_invoices` (a worker sweep) voids the invoices of checkouts that expired or
  failed (their items go to the next checkout, whose invoice shows them).

Every function runs in the caller's transaction and returns the domain events to emit once it
committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from billing_gql.catalog.plans import load_plans
from billing_gql.core.checkout import Checkout, CheckoutPurpose
from billing_gql.core.events import invoice_event
from billing_gql.core.invoices import (
    ITEM_LINE_KINDS,
    Invoice,
    InvoiceLine,
    InvoiceLineKind,
    invoice_from_row,
    line_from_row,
)
from billing_gql.core.periods import next_period_end
from billing_gql.money import Money
from billing_gql.plugins.types import DomainEvent
from billing_gql.store.invoices_sql import (
    finalize_invoice_row,
    insert_invoice_lines,
    insert_invoice_row,
    mark_invoice_paid_row,
    next_invoice_number,
    void_invoice_row,
    void_invoices_of_closed_checkouts,
)

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext

__all__ = [
    "CREDIT_CARRIED_LINE",
    "checkout_lines",
    "create_invoice",
    "finalize_invoice",
    "format_number",
    "load_invoice",
    "load_invoices",
    "load_lines",
    "mark_checkout_invoice_paid",
    "sync_checkout_invoice",
    "totals",
    "void_due_invoices",
]

CREDIT_CARRIED_LINE = "Unused credit, carried to the next invoice"
VOID_BATCH = 500


def format_number(prefix: str, year: int, sequence: int) -> str:
    """``INV-2026-000001``."""
    return f"{prefix}-{year}-{sequence:06d}"


def totals(lines: Sequence[InvoiceLine]) -> dict[str, int]:
    """subtotal (every line but discounts and taxes), discount (a positive number), tax, total."""
    discount = -sum(li.amount.minor for li in lines if li.kind == InvoiceLineKind.DISCOUNT)
    tax = sum(li.amount.minor for li in lines if li.kind == InvoiceLineKind.TAX)
    total = sum(li.amount.minor for li in lines)
    return {
        "subtotal_minor": total + discount - tax,
        "discount_minor": discount,
        "tax_minor": tax,
        "total_minor": total,
    }


async def load_lines(
    conn: asyncpg.Connection | asyncpg.Pool, invoices: Sequence[asyncpg.Record]
) -> dict[UUID, tuple[InvoiceLine, ...]]:
    """The lines of each invoice row, in order, in one query."""
    if not invoices:
        return {}
    currency = {r["id"]: r["currency"] for r in invoices}
    rows = await conn.fetch(
        "SELECT * FROM invoice_lines WHERE invoice_id = ANY($1::uuid[]) "
        "ORDER BY invoice_id, position",
        list(currency),
    )
    found: dict[UUID, list[InvoiceLine]] = {i: [] for i in currency}
    for row in rows:
        found[row["invoice_id"]].append(line_from_row(row, currency[row["invoice_id"]]))
    return {i: tuple(lines) for i, lines in found.items()}


async def load_invoice(conn: asyncpg.Connection | asyncpg.Pool, invoice_id: UUID) -> Invoice | None:
    """The invoice with its lines, or ``None``."""
    row = await conn.fetchrow("SELECT * FROM invoices WHERE id = $1", invoice_id)
    if row is None:
        return None
    return invoice_from_row(row, (await load_lines(conn, [row]))[row["id"]])


async def load_invoices(
    conn: asyncpg.Connection | asyncpg.Pool, invoice_ids: Sequence[UUID]
) -> list[Invoice]:
    """The invoices with these ids (any order; unknown ids are left out), with their lines."""
    rows = await conn.fetch("SELECT * FROM invoices WHERE id = ANY($1::uuid[])", list(invoice_ids))
    lines = await load_lines(conn, rows)
    return [invoice_from_row(row, lines[row["id"]]) for row in rows]


async def finalize_invoice(
    conn: asyncpg.Connection, prefix: str, invoice_id: UUID, now: datetime
) -> asyncpg.Record:
    """Give the DRAFT invoice the next number of ``prefix`` for ``now``'s year and open it
    (in the caller's transaction: the number is gapless and never reused)."""
    sequence = await next_invoice_number(conn, prefix, now.year)
    row = await finalize_invoice_row(
        conn, invoice_id, format_number(prefix, now.year, sequence), issued_at=now
    )
    if row is None:
        raise ValueError(f"invoice {invoice_id} is not a draft")
    return row


async def create_invoice(
    conn: asyncpg.Connection,
    prefix: str,
    values: dict[str, Any],
    lines: Sequence[InvoiceLine],
    now: datetime,
    *,
    finalize: bool = True,
) -> tuple[Invoice, list[DomainEvent]]:
    """Write an invoice (``values``: customer_id, currency, provider … ; the totals come from
    ``lines``) and finalize it unless ``finalize`` is False; ``invoice.created`` (and
    ``invoice.finalized``) follow."""
    sums = totals(lines)
    periods = [li for li in lines if li.period_start is not None and li.period_end is not None]
    row = await insert_invoice_row(
        conn,
        {
            "period_start": min((li.period_start for li in periods), default=None),  # type: ignore[type-var]
            "period_end": max((li.period_end for li in periods), default=None),  # type: ignore[type-var]
            **values,
            **sums,
            "amount_due_minor": max(sums["total_minor"], 0),
            "status": "DRAFT",
            "created_at": now,
            "updated_at": now,
        },
    )
    await insert_invoice_lines(conn, row["id"], lines)
    events = [invoice_event("invoice.created", invoice_from_row(row, tuple(lines)), now)]
    if finalize:
        row = await finalize_invoice(conn, prefix, row["id"], now)
        events.append(invoice_event("invoice.finalized", invoice_from_row(row), now))
    return invoice_from_row(row, tuple(lines)), events


async def checkout_lines(
    conn: asyncpg.Connection, checkout: Checkout, now: datetime
) -> list[InvoiceLine]:
    """What ``checkout`` asks for, line by line: its plan's price (a first purchase or a
    renewal) and the pending items it carries. When a credit exceeded the rest, the checkout
    asks for 0 and the unused credit is carried forward: a line says so."""
    lines: list[InvoiceLine] = []
    currency = checkout.currency
    if checkout.purpose != CheckoutPurpose.INVOICE and not checkout.starts_trial:
        plan = (await load_plans(conn, ids=[checkout.plan_id]))[0]
        price = plan.price(currency)
        if price is not None:
            start: datetime | None = None
            end: datetime | None = None
            if plan.interval != "ONE_TIME":
                start = checkout.renews_from or checkout.completed_at or now
                end = next_period_end(start, plan.interval, plan.interval_count, start)
            lines.append(
                InvoiceLine(
                    description=plan.name,
                    quantity=Decimal(checkout.quantity),
                    amount=Money(price.minor * checkout.quantity, currency),
                    kind=InvoiceLineKind.ONE_TIME
                    if plan.interval == "ONE_TIME"
                    else InvoiceLineKind.PLAN,
                    unit_amount_minor=price.minor,
                    period_start=start,
                    period_end=end,
                )
            )
    items = await conn.fetch(
        "SELECT kind, description, quantity, amount_minor, period_start, period_end "
        "FROM invoice_items WHERE checkout_id = $1 ORDER BY created_at, id",
        checkout.id,
    )
    lines.extend(
        InvoiceLine(
            description=r["description"],
            quantity=Decimal(r["quantity"]),
            amount=Money(r["amount_minor"], currency),
            kind=ITEM_LINE_KINDS.get(r["kind"], InvoiceLineKind.ONE_TIME),
            period_start=r["period_start"],
            period_end=r["period_end"],
        )
        for r in items
    )
    rest = checkout.amount_minor - sum(li.amount.minor for li in lines)
    if rest != 0 and lines:
        lines.append(
            InvoiceLine(
                description=CREDIT_CARRIED_LINE,
                quantity=Decimal(1),
                amount=Money(rest, currency),
                kind=InvoiceLineKind.CREDIT,
            )
        )
    return lines


def _same(current: Sequence[InvoiceLine], lines: Sequence[InvoiceLine]) -> bool:
    def key(line: InvoiceLine) -> tuple[Any, ...]:
        return (line.description, line.kind, line.quantity, line.amount.minor)

    return [key(li) for li in current] == [key(li) for li in lines]


async def sync_checkout_invoice(
    conn: asyncpg.Connection, prefix: str, checkout: Checkout, now: datetime
) -> list[DomainEvent]:
    """Make the live invoice of ``checkout`` (locked by the caller) show what it asks for:
    issue it when there is none, or void it and issue a new one when the lines changed. A
    paid invoice is never replaced."""
    lines = await checkout_lines(conn, checkout, now)
    live = await conn.fetchrow(
        "SELECT * FROM invoices WHERE checkout_id = $1 AND kind = 'invoice' AND status <> 'VOID' "
        "FOR UPDATE",
        checkout.id,
    )
    events: list[DomainEvent] = []
    if live is not None:
        current = (await load_lines(conn, [live]))[live["id"]]
        if live["status"] == "PAID" or _same(current, lines):
            return []
        voided = await void_invoice_row(conn, live["id"], now)
        if voided is not None:
            events.append(invoice_event("invoice.voided", invoice_from_row(voided), now))
    if not lines:
        return events
    _, created = await create_invoice(
        conn,
        prefix,
        {
            "customer_id": checkout.customer_id,
            "subscription_id": checkout.subscription_id,
            "checkout_id": checkout.id,
            "currency": checkout.currency,
            "provider": checkout.provider,
            "due_at": checkout.expires_at,
        },
        lines,
        now,
    )
    return events + created


async def mark_checkout_invoice_paid(
    conn: asyncpg.Connection, prefix: str, checkout: Checkout, now: datetime
) -> list[DomainEvent]:
    """``checkout`` (locked) completed: its invoice (issued now if it had none, e.g. a first
    purchase) is PAID, with the date, provider and reference of the payment that paid it."""
    events = await sync_checkout_invoice(conn, prefix, checkout, now)
    live = await conn.fetchrow(
        "SELECT * FROM invoices WHERE checkout_id = $1 AND kind = 'invoice' "
        "AND status IN ('OPEN', 'UNCOLLECTIBLE') FOR UPDATE",
        checkout.id,
    )
    if live is None:
        return events
    payment = await conn.fetchrow(
        "SELECT provider, provider_ref, reference, received_at FROM payments "
        "WHERE checkout_id = $1 AND status <> 'failed' ORDER BY received_at DESC, id LIMIT 1",
        checkout.id,
    )
    row = await mark_invoice_paid_row(
        conn,
        live["id"],
        amount_paid_minor=min(checkout.amount_paid_minor, live["total_minor"])
        if live["total_minor"] > 0
        else 0,
        paid_at=payment["received_at"] if payment else now,
        paid_provider=payment["provider"] if payment else checkout.provider,
        paid_reference=(payment["provider_ref"] or payment["reference"]) if payment else None,
        now=now,
    )
    return [*events, invoice_event("invoice.paid", invoice_from_row(row), now)]


async def void_due_invoices(runtime: ServiceContext, now: datetime) -> int:
    """Sweep: our OPEN invoices whose checkout expired or failed become VOID (they keep their
    number); ``invoice.voided`` for each."""
    async with runtime.db.transaction() as conn:
        rows = await void_invoices_of_closed_checkouts(conn, now, VOID_BATCH)
    for row in rows:
        await runtime.emit(invoice_event("invoice.voided", invoice_from_row(row), now))
    return len(rows)
