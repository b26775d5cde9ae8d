"""Writes of ``customer_provider_accounts`` and of a customer's default currency (beside the
Piccolo table classes of ``store/customers.py``, which the server never imports: Piccolo is
for the schema and the migrations only)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

__all__ = ["default_customer_currency", "remember_provider_customer"]


async def remember_provider_customer(
    conn: asyncpg.Connection,
    customer_id: uuid.UUID,
    provider: str,
    provider_customer_id: str,
    now: datetime,
) -> None:
    """Record the provider's id for our customer (the first one learned stays)."""
    await conn.execute(
        "INSERT INTO customer_provider_accounts (customer_id, provider, provider_customer_id, "
        "created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        customer_id,
        provider,
        provider_customer_id,
        now,
    )


async def default_customer_currency(
    conn: asyncpg.Connection, customer_id: uuid.UUID, currency: str
) -> None:
    """Remember ``currency`` as the customer's once it has bought in it, unless it has one
    (``viewer.currency`` and the next checkout's default follow it)."""
    await conn.execute(
        "UPDATE customers SET currency = $2 WHERE id = $1 AND currency IS NULL",
        customer_id,
        currency,
    )
