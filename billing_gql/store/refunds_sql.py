"""Every write to the ``refunds`` table (its Piccolo table is :mod:`billing_gql.store.refunds`).

Each function runs its statement on the connection it is given, inside the caller's
transaction and under the caller's lock of the refunded payment's row; it decides nothing.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg


async def insert_refund_row(
    conn: asyncpg.Connection,
    *,
    payment_id: UUID,
    provider: str,
    amount_minor: int,
    currency: str,
    status: str,
    origin: str,
    reason: str | None,
    provider_refund_id: str | None,
    reference: str | None,
    idempotency_key: str | None,
    revoke_access: bool,
    now: datetime,
) -> asyncpg.Record | None:
    """Insert a refund; ``None`` when its idempotency key or its provider refund id is taken
    (a repeat: nothing inserted)."""
    return await conn.fetchrow(
        "INSERT INTO refunds (payment_id, provider, amount_minor, currency, status, origin, "
        "reason, provider_refund_id, reference, idempotency_key, revoke_access, created_at, "
        "updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$12) "
        "ON CONFLICT DO NOTHING RETURNING *",
        payment_id,
        provider,
        amount_minor,
        currency,
        status,
        origin,
        reason,
        provider_refund_id,
        reference,
        idempotency_key,
        revoke_access,
        now,
    )


async def set_refund_status(
    conn: asyncpg.Connection,
    refund_id: UUID,
    status: str,
    now: datetime,
    *,
    amount_minor: int | None = None,
    provider_refund_id: str | None = None,
    failure_reason: str | None = None,
) -> asyncpg.Record:
    """Set the refund's status (and, when given, its amount as the provider reports it, the
    provider's id of it, why it failed); returns the row."""
    return await conn.fetchrow(
        "UPDATE refunds SET status = $2, updated_at = $3, "
        "amount_minor = COALESCE($4, amount_minor), "
        "provider_refund_id = COALESCE(provider_refund_id, $5), "
        "failure_reason = $6 WHERE id = $1 RETURNING *",
        refund_id,
        status,
        now,
        amount_minor,
        provider_refund_id,
        failure_reason,
    )


async def set_refund_provider_id(
    conn: asyncpg.Connection, refund_id: UUID, provider_refund_id: str, now: datetime
) -> asyncpg.Record:
    """Remember the provider's id of a refund still pending there; returns the row."""
    return await conn.fetchrow(
        "UPDATE refunds SET provider_refund_id = COALESCE(provider_refund_id, $2), "
        "updated_at = $3 WHERE id = $1 RETURNING *",
        refund_id,
        provider_refund_id,
        now,
    )


async def set_refund_credit_note(
    conn: asyncpg.Connection, refund_id: UUID, credit_note_id: UUID, now: datetime
) -> asyncpg.Record:
    """Link the refund to the credit note issued for it (once: a link is never replaced);
    returns the row."""
    return await conn.fetchrow(
        "UPDATE refunds SET credit_note_id = COALESCE(credit_note_id, $2), updated_at = $3 "
        "WHERE id = $1 RETURNING *",
        refund_id,
        credit_note_id,
        now,
    )
