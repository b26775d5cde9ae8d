"""Every write to the ``payments`` table (its Piccolo table is :mod:`billing_gql.store.payments`).

Each function runs its statement on the connection it is given, inside the caller's
transaction and under the caller's row locks; it decides nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg


async def insert_payment_row(
    conn: asyncpg.Connection,
    *,
    provider: str,
    provider_ref: str,
    status: str,
    amount_minor: int,
    currency: str,
    checkout_id: UUID | None,
    customer_id: UUID | None,
    subscription_id: UUID | None,
    reference: str | None,
    details: dict[str, Any] | None,
    received_at: datetime,
    now: datetime,
) -> asyncpg.Record | None:
    """Insert a payment once per (provider, provider_ref); ``None`` for a repeat."""
    return await conn.fetchrow(
        "INSERT INTO payments (provider, provider_ref, status, amount_minor, refunded_minor, "
        "currency, checkout_id, customer_id, subscription_id, reference, details, "
        "received_at, created_at) VALUES ($1,$2,$3,$4,0,$5,$6,$7,$8,$9,$10,$11,$12) "
        "ON CONFLICT (provider, provider_ref) DO NOTHING RETURNING *",
        provider,
        provider_ref,
        status,
        amount_minor,
        currency,
        checkout_id,
        customer_id,
        subscription_id,
        reference,
        details,
        received_at,
        now,
    )


async def mark_payment_assigned(
    conn: asyncpg.Connection,
    payment_id: UUID,
    *,
    checkout_id: UUID,
    customer_id: UUID,
    subscription_id: UUID | None,
) -> asyncpg.Record:
    """The payment becomes ``succeeded``, of this checkout; returns the row."""
    return await conn.fetchrow(
        "UPDATE payments SET status = 'succeeded', checkout_id = $2, customer_id = $3, "
        "subscription_id = $4 WHERE id = $1 RETURNING *",
        payment_id,
        checkout_id,
        customer_id,
        subscription_id,
    )


async def set_payment_refunded(
    conn: asyncpg.Connection, payment_id: UUID, refunded_minor: int, status: str
) -> asyncpg.Record:
    """Set the payment's refunded total and status; returns the row."""
    return await conn.fetchrow(
        "UPDATE payments SET refunded_minor = $2, status = $3 WHERE id = $1 RETURNING *",
        payment_id,
        refunded_minor,
        status,
    )


async def set_payment_disputed(
    conn: asyncpg.Connection,
    payment_id: UUID,
    *,
    status: str,
    details: dict[str, Any],
) -> asyncpg.Record:
    """Set the payment's dispute status and details; returns the row."""
    return await conn.fetchrow(
        "UPDATE payments SET status = $2, details = $3 WHERE id = $1 RETURNING *",
        payment_id,
        status,
        details,
    )
