"""Every write to the invoice tables (``invoices``, ``invoice_lines``,
``invoice_number_counters``, ``usage_period_closes``, ``usage_billed``; declared in
:mod:`billing_gql.store.invoices`).

Each function runs its statement(s) on the connection it is given, inside the caller's
transaction and under the caller's row locks; it decides nothing.
"""

# The SQL below interpolates only column names chosen by the callers and integer batch sizes.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.core.usage import InvoiceLine

__all__ = [
    "add_usage_billed",
    "close_usage_period",
    "finalize_invoice_row",
    "insert_credit_note_row",
    "insert_invoice_lines",
    "insert_invoice_row",
    "mark_invoice_paid_row",
    "next_invoice_number",
    "replace_invoice_lines",
    "settle_credit_note_row",
    "update_mirrored_invoice_row",
    "void_invoice_row",
    "void_invoices_of_closed_checkouts",
]


def _insert_sql(values: Mapping[str, Any], suffix: str = "") -> str:
    columns = list(values)
    return (
        f"INSERT INTO invoices ({', '.join(columns)}) "
        f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))}) {suffix} RETURNING *"
    )


async def insert_invoice_row(conn: asyncpg.Connection, values: Mapping[str, Any]) -> asyncpg.Record:
    """Insert an invoice (``values``: its columns); returns the row."""
    return await conn.fetchrow(_insert_sql(values), *values.values())


async def insert_credit_note_row(
    conn: asyncpg.Connection, values: Mapping[str, Any]
) -> asyncpg.Record | None:
    """Insert a credit note unless one exists for its (payment, refunded total); the row or
    ``None``."""
    return await conn.fetchrow(
        _insert_sql(
            values,
            "ON CONFLICT (payment_id, refunded_to_minor) WHERE kind = 'credit_note' DO NOTHING",
        ),
        *values.values(),
    )


async def insert_invoice_lines(
    conn: asyncpg.Connection, invoice_id: UUID, lines: Sequence[InvoiceLine]
) -> None:
    """Add ``lines`` to the invoice, numbered from 1 in order."""
    if not lines:
        return
    await conn.executemany(
        "INSERT INTO invoice_lines (invoice_id, position, description, kind, quantity, "
        "unit_amount_minor, amount_minor, period_start, period_end) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
            (
                invoice_id,
                position,
                line.description,
                line.kind,
                line.quantity,
                line.unit_amount_minor,
                line.amount.minor,
                line.period_start,
                line.period_end,
            )
            for position, line in enumerate(lines, start=1)
        ],
    )


async def replace_invoice_lines(
    conn: asyncpg.Connection, invoice_id: UUID, lines: Sequence[InvoiceLine]
) -> None:
    """The invoice's lines become ``lines`` (a mirrored invoice the provider changed)."""
    await conn.execute("DELETE FROM invoice_lines WHERE invoice_id = $1", invoice_id)
    await insert_invoice_lines(conn, invoice_id, lines)


async def next_invoice_number(conn: asyncpg.Connection, prefix: str, year: int) -> int:
    """The next number of (prefix, year), taken in the caller's transaction: the counter row
    stays locked until it commits (a concurrent finalization waits), and a rollback gives the
    number back, so numbers are gapless and never given twice."""
    value: int = await conn.fetchval(
        "INSERT INTO invoice_number_counters (prefix, year, last_number) VALUES ($1, $2, 1) "
        "ON CONFLICT (prefix, year) DO UPDATE "
        "SET last_number = invoice_number_counters.last_number + 1 RETURNING last_number",
        prefix,
        year,
    )
    return value


async def finalize_invoice_row(
    conn: asyncpg.Connection, invoice_id: UUID, number: str, *, issued_at: datetime
) -> asyncpg.Record:
    """A DRAFT invoice gets its number and becomes OPEN; returns the row."""
    return await conn.fetchrow(
        "UPDATE invoices SET number = $2, status = 'OPEN', issued_at = $3, updated_at = $3 "
        "WHERE id = $1 AND status = 'DRAFT' RETURNING *",
        invoice_id,
        number,
        issued_at,
    )


async def mark_invoice_paid_row(
    conn: asyncpg.Connection,
    invoice_id: UUID,
    *,
    amount_paid_minor: int,
    paid_at: datetime,
    paid_provider: str | None,
    paid_reference: str | None,
    now: datetime,
) -> asyncpg.Record:
    """The invoice is PAID (with the payment's date, provider and reference); returns the row."""
    return await conn.fetchrow(
        "UPDATE invoices SET status = 'PAID', amount_paid_minor = $2, "
        "amount_due_minor = GREATEST(total_minor - $2, 0), paid_at = $3, paid_provider = $4, "
        "paid_reference = $5, updated_at = $6 WHERE id = $1 RETURNING *",
        invoice_id,
        amount_paid_minor,
        paid_at,
        paid_provider,
        paid_reference,
        now,
    )


async def settle_credit_note_row(
    conn: asyncpg.Connection, invoice_id: UUID, now: datetime
) -> asyncpg.Record:
    """A finalized credit note is PAID (its money went back); returns the row."""
    return await conn.fetchrow(
        "UPDATE invoices SET status = 'PAID', updated_at = $2 WHERE id = $1 "
        "AND kind = 'credit_note' RETURNING *",
        invoice_id,
        now,
    )


async def void_invoice_row(
    conn: asyncpg.Connection, invoice_id: UUID, now: datetime
) -> asyncpg.Record | None:
    """An OPEN invoice becomes VOID (it keeps its number); returns the row, ``None`` if it was
    not OPEN."""
    return await conn.fetchrow(
        "UPDATE invoices SET status = 'VOID', voided_at = $2, amount_due_minor = 0, "
        "updated_at = $2 WHERE id = $1 AND status = 'OPEN' RETURNING *",
        invoice_id,
        now,
    )


async def void_invoices_of_closed_checkouts(
    conn: asyncpg.Connection, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Up to ``limit`` of our OPEN invoices whose checkout expired or failed become VOID."""
    return list(
        await conn.fetch(
            f"UPDATE invoices SET status = 'VOID', voided_at = $1, amount_due_minor = 0, "
            f"updated_at = $1 WHERE id IN (SELECT i.id FROM invoices i JOIN checkouts c "
            f"ON c.id = i.checkout_id WHERE i.status = 'OPEN' AND i.provider_invoice_id IS NULL "
            f"AND c.status IN ('EXPIRED', 'FAILED') ORDER BY i.created_at "
            f"LIMIT {int(limit)} FOR UPDATE OF i SKIP LOCKED) AND status = 'OPEN' RETURNING *",
            now,
        )
    )


async def update_mirrored_invoice_row(
    conn: asyncpg.Connection, invoice_id: UUID, values: Mapping[str, Any]
) -> asyncpg.Record:
    """Overwrite a mirrored invoice's columns with the provider's newer state."""
    columns = list(values)
    assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=2))
    return await conn.fetchrow(
        f"UPDATE invoices SET {assignments} WHERE id = $1 RETURNING *",
        invoice_id,
        *values.values(),
    )


async def close_usage_period(
    conn: asyncpg.Connection,
    subscription_id: UUID,
    *,
    start: datetime,
    end: datetime,
    plan_id: UUID,
    now: datetime,
) -> bool:
    """Record that the period's usage is billed; False when it was already."""
    closed = await conn.fetchval(
        "INSERT INTO usage_period_closes (subscription_id, period_start, period_end, plan_id, "
        "closed_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1",
        subscription_id,
        start,
        end,
        plan_id,
        now,
    )
    return closed is not None


async def add_usage_billed(
    conn: asyncpg.Connection,
    subscription_id: UUID,
    period_start: datetime,
    meter_id: UUID,
    *,
    quantity: Decimal,
    amount_minor: int,
    now: datetime,
) -> None:
    """What the meter's charge of that period has been billed becomes ``quantity`` units for
    ``amount_minor`` in all."""
    await conn.execute(
        "INSERT INTO usage_billed (subscription_id, period_start, meter_id, quantity, "
        "amount_minor, updated_at) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (subscription_id, period_start, meter_id) DO UPDATE "
        "SET quantity = EXCLUDED.quantity, amount_minor = EXCLUDED.amount_minor, "
        "updated_at = EXCLUDED.updated_at",
        subscription_id,
        period_start,
        meter_id,
        quantity,
        amount_minor,
        now,
    )
