"""Writes of ``customer_provider_accounts`` (beside the Piccolo table classes of
``store/customers.py``, which the server never imports: Piccolo is for the schema and the
migrations only)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

__all__ = ["remember_provider_customer"]


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
