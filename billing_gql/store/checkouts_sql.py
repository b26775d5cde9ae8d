"""Every write to the ``checkouts`` table (its Piccolo table is :mod:`billing_gql.store.checkout`).

Each function runs its statement(s) on the connection it is given, inside the caller's
transaction and under the caller's row locks; it decides nothing.
"""

# The SQL below interpolates only column names chosen by the callers, the caller's conflict
# clause and integer batch sizes.
# ruff: noqa: S608

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

log = logging.getLogger(__name__)

_REFERENCE_CONSTRAINTS = {"checkouts_reference_key", "checkouts_reference_ci_key"}
_REFERENCE_ATTEMPTS = 20


async def insert_checkout_row(
    conn: asyncpg.Connection | asyncpg.Pool,
    values: Mapping[str, Any],
    conflict: str,
    *,
    payment_reference: Callable[[], str | None] | None,
    provider_name: str,
) -> UUID | None:
    """Insert an OPEN checkout, asking ``payment_reference`` again while its reference is taken."""
    columns = [*values, "payment_reference", "status", "amount_paid_minor", "updated_at"]
    sql = (
        f"INSERT INTO checkouts ({', '.join(columns)}) "
        f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))}) {conflict} "
        "RETURNING id"
    )
    for attempt in range(_REFERENCE_ATTEMPTS):
        reference = payment_reference() if payment_reference is not None else None
        args = [*values.values(), reference, "OPEN", 0, values["created_at"]]
        try:
            if isinstance(conn, asyncpg.Connection) and conn.is_in_transaction():
                async with conn.transaction():  # a savepoint: a collision must not abort us
                    value = await conn.fetchval(sql, *args)
            else:
                value = await conn.fetchval(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name in _REFERENCE_CONSTRAINTS and attempt + 1 < _REFERENCE_ATTEMPTS:
                log.info("payment reference collision at %s; asking for another", provider_name)
                continue
            raise
        return value if isinstance(value, UUID) else None
    raise AssertionError("unreachable")


async def clear_trial_days(conn: asyncpg.Connection, checkout_id: UUID) -> None:
    """The checkout grants no trial (its customer redeemed this plan's trial already)."""
    await conn.execute("UPDATE checkouts SET trial_days = 0 WHERE id = $1", checkout_id)


async def claim_checkout_session(
    conn: asyncpg.Connection | asyncpg.Pool, checkout_id: UUID, claim: UUID, lease_seconds: float
) -> asyncpg.Record | None:
    """Claim the creation of an OPEN, unprepared checkout's provider session for ``claim``
    (committed before the provider is called): free, or held by a claim older than
    ``lease_seconds`` of wall time (its claimant died). Returns the row, or ``None`` when it
    is prepared, no longer OPEN or claimed by someone alive."""
    return await conn.fetchrow(
        "UPDATE checkouts SET session_claim = $2, session_claimed_at = clock_timestamp() "
        "WHERE id = $1 AND status = 'OPEN' AND prepared_at IS NULL AND (session_claim IS NULL "
        "OR session_claimed_at < clock_timestamp() - make_interval(secs => $3)) RETURNING *",
        checkout_id,
        claim,
        float(lease_seconds),
    )


async def mark_checkout_failed(
    conn: asyncpg.Connection,
    checkout_id: UUID,
    *,
    message: str,
    code: str,
    field: Sequence[str] | None,
    now: datetime,
    claim: UUID | None = None,
) -> asyncpg.Record | None:
    """The checkout becomes FAILED with the provider's (redacted) error; returns the row.

    With ``claim``: only while that session claim still holds and the checkout is OPEN
    (``None`` otherwise: a webhook or another claimant settled it meanwhile)."""
    return await conn.fetchrow(
        "UPDATE checkouts SET status = 'FAILED', error = $2, error_code = $3, "
        "error_field = $5, updated_at = $4, session_claim = NULL WHERE id = $1 "
        "AND ($6::uuid IS NULL OR (session_claim = $6 AND status = 'OPEN')) RETURNING *",
        checkout_id,
        message,
        code,
        now,
        field,
        claim,
    )


async def record_checkout_session(
    conn: asyncpg.Connection,
    checkout_id: UUID,
    *,
    url: str | None,
    provider_checkout_id: str | None,
    bank_transfer: dict[str, Any] | None,
    expires_at: datetime | None,
    now: datetime,
    claim: UUID,
) -> asyncpg.Record | None:
    """Store the provider session prepared for the checkout while ``claim`` still holds;
    returns the row (``None``: another claimant took over, its result stands)."""
    return await conn.fetchrow(
        "UPDATE checkouts SET url = $2, provider_checkout_id = $3, bank_transfer = $4, "
        "expires_at = COALESCE($5, expires_at), prepared_at = $6, updated_at = $6, "
        "session_claim = NULL WHERE id = $1 AND session_claim = $7 AND prepared_at IS NULL "
        "RETURNING *",
        checkout_id,
        url,
        provider_checkout_id,
        bank_transfer,
        expires_at,
        now,
        claim,
    )


async def set_provider_checkout_id(
    conn: asyncpg.Connection, checkout_id: UUID, provider_checkout_id: str
) -> None:
    """Record the provider's id of the checkout (learnt from a delivery)."""
    await conn.execute(
        "UPDATE checkouts SET provider_checkout_id = $2 WHERE id = $1",
        checkout_id,
        provider_checkout_id,
    )


async def add_checkout_paid(
    conn: asyncpg.Connection, checkout_id: UUID, amount_minor: int, now: datetime
) -> asyncpg.Record:
    """Add a payment's amount to the checkout's ``amount_paid_minor``; returns the row."""
    return await conn.fetchrow(
        "UPDATE checkouts SET amount_paid_minor = amount_paid_minor + $2, updated_at = $3 "
        "WHERE id = $1 RETURNING *",
        checkout_id,
        amount_minor,
        now,
    )


async def add_checkout_refund(
    conn: asyncpg.Connection, checkout_id: UUID, amount_minor: int, now: datetime
) -> None:
    """Add a refund's amount to the checkout's ``refunded_minor``."""
    await conn.execute(
        "UPDATE checkouts SET refunded_minor = refunded_minor + $2, updated_at = $3 WHERE id = $1",
        checkout_id,
        amount_minor,
        now,
    )


async def mark_checkout_completed(
    conn: asyncpg.Connection, checkout_id: UUID, subscription_id: UUID | None, now: datetime
) -> asyncpg.Record:
    """The checkout becomes COMPLETED (of ``subscription_id``); returns the row."""
    return await conn.fetchrow(
        "UPDATE checkouts SET status = 'COMPLETED', completed_at = $2, updated_at = $2, "
        "subscription_id = $3 WHERE id = $1 RETURNING *",
        checkout_id,
        now,
        subscription_id,
    )


async def set_checkout_amount(
    conn: asyncpg.Connection, checkout_id: UUID, amount_minor: int, now: datetime
) -> asyncpg.Record:
    """Set the checkout's amount due; returns the row."""
    return await conn.fetchrow(
        "UPDATE checkouts SET amount_minor = $2, updated_at = $3 WHERE id = $1 RETURNING *",
        checkout_id,
        amount_minor,
        now,
    )


async def set_checkout_status(
    conn: asyncpg.Connection, checkout_id: UUID, status: str, now: datetime
) -> asyncpg.Record:
    """Set the checkout's status; returns the row."""
    return await conn.fetchrow(
        "UPDATE checkouts SET status = $2, updated_at = $3 WHERE id = $1 RETURNING *",
        checkout_id,
        status,
        now,
    )


async def flag_already_subscribed(conn: asyncpg.Connection, checkout_id: UUID, error: str) -> None:
    """Record on the checkout that its customer already held the plan (``ALREADY_SUBSCRIBED``)."""
    await conn.execute(
        "UPDATE checkouts SET error_code = 'ALREADY_SUBSCRIBED', error = $2 WHERE id = $1",
        checkout_id,
        error,
    )


async def link_checkout_subscription(
    conn: asyncpg.Connection, checkout_id: UUID, subscription_id: UUID, now: datetime
) -> None:
    """Record the subscription the checkout made."""
    await conn.execute(
        "UPDATE checkouts SET subscription_id = $2, updated_at = $3 WHERE id = $1",
        checkout_id,
        subscription_id,
        now,
    )


async def buy_renewal_period(
    conn: asyncpg.Connection,
    checkout_id: UUID,
    subscription_id: UUID,
    *,
    renews_from: datetime,
    start: datetime,
    end: datetime,
) -> UUID | None:
    """Record the period a renewal checkout paid, unless another checkout paid it; its id if so."""
    bought: UUID | None = await conn.fetchval(
        "UPDATE checkouts SET renews_from = $2, paid_period_start = $3, paid_period_end = $4 "
        "WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM checkouts WHERE subscription_id = $5 "
        "AND renews_from = $2 AND paid_period_start IS NOT NULL) RETURNING id",
        checkout_id,
        renews_from,
        start,
        end,
        subscription_id,
    )
    return bought


async def release_paid_period(
    conn: asyncpg.Connection, subscription_id: UUID, renews_from: datetime | None, now: datetime
) -> asyncpg.Record | None:
    """The renewal that paid the period from ``renews_from`` pays it no more; returns its row."""
    return await conn.fetchrow(
        "UPDATE checkouts SET paid_period_start = NULL, paid_period_end = NULL, updated_at = $3 "
        "WHERE subscription_id = $1 AND renews_from = $2 AND paid_period_start IS NOT NULL "
        "RETURNING *",
        subscription_id,
        renews_from,
        now,
    )


async def expire_superseded_renewals(
    conn: asyncpg.Connection,
    subscription_id: UUID,
    renews_from: datetime,
    besides: UUID,
    now: datetime,
) -> list[asyncpg.Record]:
    """OPEN renewals of the subscription up to ``renews_from`` (but ``besides``) expire."""
    return list(
        await conn.fetch(
            "UPDATE checkouts SET status = 'EXPIRED', updated_at = $4 WHERE id IN (SELECT id "
            "FROM checkouts WHERE subscription_id = $1 AND purpose = 'renewal' "
            "AND status = 'OPEN' AND renews_from <= $2 AND id <> $3 FOR UPDATE SKIP LOCKED) "
            "RETURNING *",
            subscription_id,
            renews_from,
            besides,
            now,
        )
    )


async def expire_open_renewals(
    conn: asyncpg.Connection, subscription_ids: Sequence[UUID], now: datetime
) -> list[asyncpg.Record]:
    """The OPEN renewal checkouts of these subscriptions expire; returns their rows."""
    return list(
        await conn.fetch(
            "UPDATE checkouts SET status = 'EXPIRED', updated_at = $2 "
            "WHERE subscription_id = ANY($1) AND purpose = 'renewal' AND status = 'OPEN' "
            "RETURNING *",
            list(subscription_ids),
            now,
        )
    )


async def expire_open_push_checkouts(
    conn: asyncpg.Connection, subscription_id: UUID, now: datetime, purpose: str | None
) -> list[asyncpg.Record]:
    """The subscription's OPEN non-new checkouts (of ``purpose``, if given) expire."""
    return list(
        await conn.fetch(
            "UPDATE checkouts SET status = 'EXPIRED', updated_at = $2 WHERE subscription_id = $1 "
            "AND status = 'OPEN' AND purpose <> 'new' AND purpose = COALESCE($3, purpose) "
            "RETURNING *",
            subscription_id,
            now,
            purpose,
        )
    )


async def expire_due_checkouts(
    conn: asyncpg.Connection, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Up to ``limit`` OPEN checkouts past ``expires_at`` (unlocked ones) expire."""
    return list(
        await conn.fetch(
            f"UPDATE checkouts SET status = 'EXPIRED', updated_at = $1 "
            f"WHERE id IN (SELECT id FROM checkouts WHERE status = 'OPEN' AND expires_at <= $1 "
            f"ORDER BY expires_at LIMIT {int(limit)} FOR UPDATE SKIP LOCKED) "
            f"AND status = 'OPEN' RETURNING *",
            now,
        )
    )


async def expire_customer_checkouts(
    conn: asyncpg.Connection, customer_id: UUID | None, now: datetime
) -> list[asyncpg.Record]:
    """A deleted customer's OPEN checkouts expire (nothing more is sold to it)."""
    return list(
        await conn.fetch(
            "UPDATE checkouts SET status = 'EXPIRED', updated_at = $2 "
            "WHERE customer_id = $1 AND status = 'OPEN' RETURNING *",
            customer_id,
            now,
        )
    )
