"""Every write to the ``subscriptions`` table (its Piccolo table is
:mod:`billing_gql.store.subscriptions`).

Each function runs its statement on the connection it is given, inside the caller's
transaction and under the caller's row locks; it decides nothing.
"""

# The SQL below interpolates only column names chosen by the callers, module constants and
# integer batch sizes.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

PERIOD_BOUNDARY = "s.current_period_end"
"""When a push subscription's paid time runs out (``s``: the subscription)."""


async def insert_subscription_row(
    conn: asyncpg.Connection, values: Mapping[str, Any]
) -> asyncpg.Record | None:
    """Insert a subscription of these column values; ``None`` when a unique key kept it out."""
    columns = list(values)
    return await conn.fetchrow(
        f"INSERT INTO subscriptions ({', '.join(columns)}) "
        f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))}) "
        "ON CONFLICT DO NOTHING RETURNING *",
        *values.values(),
    )


async def update_subscription(
    conn: asyncpg.Connection, subscription_id: UUID, now: datetime, values: Mapping[str, Any]
) -> asyncpg.Record:
    """Set these columns of the subscription (and ``updated_at``); returns the row."""
    sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(values, start=3))
    return await conn.fetchrow(
        f"UPDATE subscriptions SET updated_at = $2, {sets} WHERE id = $1 RETURNING *",
        subscription_id,
        now,
        *values.values(),
    )


async def apply_subscription_snapshot(
    conn: asyncpg.Connection,
    subscription_id: UUID,
    version: datetime | None,
    values: Mapping[str, Any],
) -> asyncpg.Record:
    """Set these columns and advance the provider version (never back); returns the row."""
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(values, start=3))
    # The version never goes back (GREATEST ignores a NULL: no version, no change).
    return await conn.fetchrow(
        f"UPDATE subscriptions SET provider_updated_at = GREATEST(provider_updated_at, $2), "
        f"{sets} WHERE id = $1 RETURNING *",
        subscription_id,
        version,
        *values.values(),
    )


async def set_subscription_status(
    conn: asyncpg.Connection,
    subscription_id: UUID,
    status: str,
    now: datetime,
    version: datetime | None,
) -> asyncpg.Record:
    """Set the status and advance the provider version (never back); returns the row."""
    return await conn.fetchrow(
        "UPDATE subscriptions SET status = $2, updated_at = $3, "
        "provider_updated_at = GREATEST(provider_updated_at, $4) WHERE id = $1 RETURNING *",
        subscription_id,
        status,
        now,
        version,
    )


async def set_origin_checkout(
    conn: asyncpg.Connection, subscription_id: UUID, checkout_id: UUID
) -> None:
    """Record the checkout that made the subscription."""
    await conn.execute(
        "UPDATE subscriptions SET origin_checkout_id = $2 WHERE id = $1",
        subscription_id,
        checkout_id,
    )


async def enter_subscription_period(
    conn: asyncpg.Connection,
    subscription_id: UUID,
    *,
    plan_id: UUID,
    start: datetime,
    end: datetime,
    anchor: datetime,
    now: datetime,
) -> asyncpg.Record:
    """ACTIVE in the period ``start``–``end`` at ``plan_id`` (a pending change to it done)."""
    return await conn.fetchrow(
        "UPDATE subscriptions SET status = 'ACTIVE', plan_id = $2, "
        "pending_plan_id = CASE WHEN pending_plan_id = $2 THEN NULL ELSE pending_plan_id END, "
        "pending_plan_at = CASE WHEN pending_plan_id = $2 THEN NULL ELSE pending_plan_at END, "
        "current_period_start = $3, current_period_end = $4, billing_anchor = $5, "
        "ended_at = NULL, updated_at = $6 WHERE id = $1 RETURNING *",
        subscription_id,
        plan_id,
        start,
        end,
        anchor,
        now,
    )


async def drop_pending_plans_held(
    conn: asyncpg.Connection, now: datetime, live_statuses: Sequence[str]
) -> list[asyncpg.Record]:
    """Due plan changes to a plan the customer holds live otherwise are dropped; their ids."""
    return list(
        await conn.fetch(
            "UPDATE subscriptions s SET pending_plan_id = NULL, pending_plan_at = NULL, "
            "updated_at = $1 WHERE s.pending_plan_at <= $1 AND s.pending_plan_id IS NOT NULL "
            "AND s.status = ANY($2::text[]) AND EXISTS (SELECT 1 FROM subscriptions o "
            "WHERE o.customer_id = s.customer_id AND o.plan_id = s.pending_plan_id "
            "AND o.id <> s.id AND o.status = ANY($2::text[]) AND NOT o.legacy_duplicate) "
            "RETURNING s.id",
            now,
            list(live_statuses),
        )
    )


async def apply_due_pending_plans(
    conn: asyncpg.Connection, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Up to ``limit`` due plan changes take effect; rows with ``previous_plan_id``."""
    return list(
        await conn.fetch(
            f"WITH due AS (SELECT id, plan_id AS previous_plan_id FROM subscriptions "
            f"WHERE pending_plan_at <= $1 AND pending_plan_id IS NOT NULL "
            f"AND status NOT IN ('CANCELED', 'EXPIRED') "
            f"ORDER BY pending_plan_at LIMIT {int(limit)} FOR UPDATE SKIP LOCKED) "
            f"UPDATE subscriptions s SET plan_id = s.pending_plan_id, pending_plan_id = NULL, "
            f"pending_plan_at = NULL, updated_at = $1 FROM due WHERE s.id = due.id "
            f"RETURNING s.*, due.previous_plan_id",
            now,
        )
    )


async def cancel_ended_subscriptions(
    conn: asyncpg.Connection, now: datetime, providers: Sequence[str], limit: int
) -> list[asyncpg.Record]:
    """Up to ``limit`` push subscriptions set to cancel whose period ended become CANCELED."""
    return list(
        await conn.fetch(
            f"UPDATE subscriptions s SET status = 'CANCELED', "
            f"ended_at = {PERIOD_BOUNDARY}, "
            f"canceled_at = COALESCE(s.canceled_at, {PERIOD_BOUNDARY}), "
            f"updated_at = $1 "
            f"WHERE s.id IN (SELECT s.id FROM subscriptions s WHERE s.provider = ANY($2) "
            f"AND s.status IN ('ACTIVE', 'TRIALING') AND s.cancel_at_period_end "
            f"AND {PERIOD_BOUNDARY} <= $1 LIMIT {int(limit)} FOR UPDATE SKIP LOCKED) "
            f"AND s.status IN ('ACTIVE', 'TRIALING') RETURNING *",
            now,
            providers,
        )
    )


async def activate_ended_trials(
    conn: asyncpg.Connection, now: datetime, providers: Sequence[str], limit: int
) -> list[asyncpg.Record]:
    """Up to ``limit`` push TRIALING subscriptions already in a paid period become ACTIVE."""
    return list(
        await conn.fetch(
            f"UPDATE subscriptions s SET status = 'ACTIVE', updated_at = $1 "
            f"WHERE s.id IN (SELECT id FROM subscriptions WHERE provider = ANY($2) "
            f"AND status = 'TRIALING' AND trial_end <= $1 AND current_period_end > $1 "
            f"LIMIT {int(limit)} FOR UPDATE SKIP LOCKED) AND s.status = 'TRIALING' "
            f"RETURNING *",
            now,
            providers,
        )
    )


async def mark_unpaid_past_due(
    conn: asyncpg.Connection, now: datetime, providers: Sequence[str], limit: int
) -> list[asyncpg.Record]:
    """Up to ``limit`` push subscriptions whose period ended unpaid become PAST_DUE."""
    return list(
        await conn.fetch(
            f"WITH due AS (SELECT s.id, s.status AS previous_status FROM subscriptions s "
            f"WHERE s.provider = ANY($2) AND s.status IN ('ACTIVE', 'TRIALING') "
            f"AND NOT s.cancel_at_period_end AND {PERIOD_BOUNDARY} <= $1 "
            f"LIMIT {int(limit)} FOR UPDATE SKIP LOCKED) "
            f"UPDATE subscriptions s SET status = 'PAST_DUE', updated_at = $1 FROM due "
            f"WHERE s.id = due.id "
            f"RETURNING s.*, due.previous_status",
            now,
            providers,
        )
    )


async def expire_past_due_subscriptions(
    conn: asyncpg.Connection,
    now: datetime,
    providers: Sequence[str],
    grace: timedelta,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to ``limit`` push PAST_DUE subscriptions ``grace`` past their period become EXPIRED."""
    return list(
        await conn.fetch(
            f"UPDATE subscriptions s SET status = 'EXPIRED', "
            f"ended_at = s.current_period_end + $3::interval, updated_at = $1 "
            f"WHERE s.id IN (SELECT id FROM subscriptions WHERE provider = ANY($2) "
            f"AND status = 'PAST_DUE' AND current_period_end + $3::interval <= $1 "
            f"LIMIT {int(limit)} FOR UPDATE SKIP LOCKED) AND s.status = 'PAST_DUE' "
            f"RETURNING *",
            now,
            providers,
            grace,
        )
    )
