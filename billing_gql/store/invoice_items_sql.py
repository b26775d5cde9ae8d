"""Every write to the ``invoice_items`` table (its Piccolo table is
:mod:`billing_gql.store.subscriptions`): pending items billed by a subscription's next push
checkout, and the record of items billed already.

Each function runs its statement on the connection it is given, inside the caller's
transaction and under the caller's row locks; it decides nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg

CREDIT_CARRIED = "Credit carried forward"
RENEWAL_PAID_TWICE = "Credit: a renewal of a period paid already"


async def carry_credit(
    conn: asyncpg.Connection,
    subscription_id: uuid.UUID,
    currency: str,
    amount_minor: int,
    now: datetime,
    *,
    description: str = CREDIT_CARRIED,
) -> None:
    """A pending item of ``amount_minor`` (negative: a credit) billed by the next push checkout:
    what a checkout could not use (a credit larger than what it billed) is kept, never lost."""
    await conn.execute(
        "INSERT INTO invoice_items (subscription_id, kind, description, currency, amount_minor, "
        "quantity, created_at) VALUES ($1, $2, $3, $4, $5, 1, $6)",
        subscription_id,
        "credit" if amount_minor < 0 else "adjustment",
        description,
        currency,
        amount_minor,
        now,
    )


async def carry_items_on_checkout(
    conn: asyncpg.Connection, checkout_id: uuid.UUID, item_ids: Sequence[uuid.UUID]
) -> None:
    """These pending items are carried (to be billed) by the push checkout ``checkout_id``."""
    await conn.execute(
        "UPDATE invoice_items SET checkout_id = $1, "
        "carried_by = array_append(carried_by, $1) WHERE id = ANY($2::uuid[])",
        checkout_id,
        list(item_ids),
    )


async def bill_items_by_checkout(
    conn: asyncpg.Connection,
    checkout_id: uuid.UUID,
    item_ids: Sequence[uuid.UUID],
    open_holders: Sequence[uuid.UUID],
    now: datetime,
) -> None:
    """These items are invoiced by ``checkout_id``; the open checkouts holding them let go."""
    # (SET sees the old row.)
    await conn.execute(
        "UPDATE invoice_items SET invoiced_at = $2, checkout_id = $1, carried_by = CASE "
        "WHEN checkout_id = ANY($4::uuid[]) THEN array_remove(carried_by, checkout_id) "
        "ELSE carried_by END WHERE id = ANY($3::uuid[])",
        checkout_id,
        now,
        list(item_ids),
        list(open_holders),
    )


async def record_proration_item(
    conn: asyncpg.Connection,
    subscription_id: uuid.UUID,
    *,
    description: str,
    currency: str,
    amount_minor: int,
    invoiced_at: datetime | None,
    now: datetime,
) -> None:
    """Record a proration item of a plan change (``invoiced_at``: billed already, if given)."""
    await conn.execute(
        "INSERT INTO invoice_items (subscription_id, kind, description, currency, "
        "amount_minor, quantity, invoiced_at, created_at) "
        "VALUES ($1, 'proration', $2, $3, $4, 1, $5, $6)",
        subscription_id,
        description,
        currency,
        amount_minor,
        invoiced_at,
        now,
    )


async def record_usage_item(
    conn: asyncpg.Connection,
    subscription_id: uuid.UUID,
    *,
    description: str,
    currency: str,
    amount_minor: int,
    quantity: Decimal,
    period_start: datetime,
    period_end: datetime,
    now: datetime,
) -> uuid.UUID:
    """Record a pending usage item (a closed period's usage charge, billed in arrears)."""
    item_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO invoice_items (subscription_id, kind, description, currency, amount_minor, "
        "quantity, period_start, period_end, created_at) "
        "VALUES ($1, 'usage', $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        subscription_id,
        description,
        currency,
        amount_minor,
        quantity,
        period_start,
        period_end,
        now,
    )
    return item_id
