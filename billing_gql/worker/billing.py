"""The billing sweeps: checkout expiry and the push-renewal lifecycle, driven by the clock.

Push-renewed subscriptions are those whose provider cannot charge renewals itself
(``Provider.charges_renewals = False``: ``manual``, bank transfers). For them, billing-gql
runs the period itself:

- ``renewal_lead_days`` before the period (or trial) ends, a renewal checkout is issued —
  one per period (``checkouts.renews_from`` names the period end; a unique index allows one
  OPEN renewal per subscription and period);
- paying it buys the next period (the engine records it on the checkout); the subscription
  moves into that period at its start, the current period end: paid ahead, this sweep moves
  it then (ACTIVE, a plan change scheduled for the period end done); paid late, the engine
  does at once;
- at the period end an unpaid subscription becomes PAST_DUE, and ``grace_days`` later EXPIRED
  (its open renewal checkout expires with it); one set to cancel at period end becomes
  CANCELED instead (unless its next period was paid ahead: it ends after that one), and no
  renewal is issued for it;
- a pending plan change (``pending_plan_at``) takes effect at its time.

Each sweep changes rows with a conditional ``UPDATE … WHERE status = …`` (or claims them with
``FOR UPDATE SKIP LOCKED``) so concurrent workers never handle one row twice, and emits a
:class:`~billing_gql.plugins.types.DomainEvent` per change after it commits.
"""

# The SQL below interpolates only module constants (column lists, the batch size).
# ruff: noqa: S608

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from billing_gql.applier.engine import LIVE_FOR_PLAN, enter_period
from billing_gql.catalog.service import load_plans
from billing_gql.checkout.push_renewals import create_renewal_checkout
from billing_gql.checkout.session import CLAIM_LEASE_SECONDS
from billing_gql.core.checkout import checkout_from_row
from billing_gql.core.events import checkout_event, subscription_event
from billing_gql.core.subscriptions import subscription_from_row
from billing_gql.crashpoints import crashpoint
from billing_gql.errors import UserInputError
from billing_gql.plugins.types import DomainEvent
from billing_gql.store.checkouts_sql import expire_due_checkouts, expire_open_renewals
from billing_gql.store.subscriptions_sql import (
    PERIOD_BOUNDARY,
    activate_ended_trials,
    apply_due_pending_plans,
    cancel_ended_subscriptions,
    drop_pending_plans_held,
    expire_past_due_subscriptions,
    mark_unpaid_past_due,
)

if TYPE_CHECKING:
    import asyncpg

    from billing_gql.context import ServiceContext

log = logging.getLogger(__name__)

BATCH = 500
"""Rows one sweep pass handles per statement; the next pass (or tick) takes the rest."""

RENEWAL_RETRY = timedelta(minutes=15)
"""Pause before issuing a renewal again after the provider failed one."""

# The moment a push subscription's paid time runs out. While trialing the period is the
# trial (the engine sets current_period_end = trial_end), so a trial ends like a period.
_BOUNDARY = PERIOD_BOUNDARY


def push_providers(runtime: ServiceContext) -> list[str]:
    """Names of the registered providers whose renewals billing-gql pushes itself."""
    return [name for name, entry in runtime.providers.items() if not entry.cls.charges_renewals]


def _subscription_event(kind: str, row: asyncpg.Record, now: datetime, **extra: Any) -> DomainEvent:
    """The ``subscription.*`` event for ``row`` (all columns), plus ``extra`` data."""
    return subscription_event(kind, subscription_from_row(row), now, **extra)


def _checkout_event(kind: str, row: asyncpg.Record, now: datetime) -> DomainEvent:
    return checkout_event(kind, checkout_from_row(row), now)


async def _emit_all(runtime: ServiceContext, events: Sequence[DomainEvent]) -> None:
    for event in events:
        await runtime.emit(event)


async def expire_checkouts(runtime: ServiceContext, now: datetime) -> int:
    """OPEN checkouts past ``expires_at`` become EXPIRED."""
    async with runtime.db.acquire() as conn:
        rows = await expire_due_checkouts(conn, now, BATCH)
    await _emit_all(runtime, [_checkout_event("checkout.expired", r, now) for r in rows])
    return len(rows)


async def apply_pending_plans(runtime: ServiceContext, now: datetime) -> int:
    """Plan changes scheduled for the period end (``pending_plan_at``) take effect; one to a
    plan the customer holds live otherwise (bought meanwhile) is dropped, as there is one live
    subscription per customer and plan."""
    async with runtime.db.acquire() as conn:
        dropped = await drop_pending_plans_held(conn, now, LIVE_FOR_PLAN)
    for row in dropped:
        log.warning("plan change of %s dropped: its customer holds that plan", row["id"])
    async with runtime.db.acquire() as conn:
        rows = await apply_due_pending_plans(conn, now, BATCH)
    await _emit_all(
        runtime,
        [
            _subscription_event(
                "subscription.plan_changed", r, now, previous_plan_id=str(r["previous_plan_id"])
            )
            for r in rows
        ],
    )
    return len(rows)


async def start_paid_periods(runtime: ServiceContext, now: datetime) -> int:
    """Push subscriptions whose next period was paid ahead move into it when their current
    period ends: ACTIVE (also after a trial), the paid period's bounds, and the plan the
    renewal paid for."""
    push = push_providers(runtime)
    if not push:
        return 0
    async with runtime.db.transaction() as conn:
        rows = await conn.fetch(
            f"SELECT s.*, c.plan_id AS paid_plan_id, c.paid_period_start, c.paid_period_end "
            f"FROM subscriptions s JOIN checkouts c ON c.subscription_id = s.id "
            f"AND c.renews_from = s.current_period_end AND c.paid_period_start IS NOT NULL "
            f"WHERE s.provider = ANY($2) AND s.status IN ('ACTIVE', 'TRIALING', 'PAST_DUE') "
            f"AND {_BOUNDARY} <= $1 ORDER BY {_BOUNDARY} LIMIT {BATCH} "
            f"FOR UPDATE OF s SKIP LOCKED",
            now,
            push,
        )
        plans = {p.id: p for p in await load_plans(conn, ids=[r["paid_plan_id"] for r in rows])}
        entered = [
            (
                r["status"],
                await enter_period(
                    conn,
                    subscription_from_row(r),
                    plans[r["paid_plan_id"]],
                    start=r["paid_period_start"],
                    end=r["paid_period_end"],
                    now=now,
                ),
            )
            for r in rows
        ]
    await _emit_all(
        runtime,
        [
            subscription_event("subscription.updated", sub, now, previous_status=previous)
            for previous, sub in entered
        ],
    )
    return len(entered)


async def end_periods(runtime: ServiceContext, now: datetime) -> int:
    """Push subscriptions whose paid time ran out: canceled, activated after a paid trial, or
    PAST_DUE (renewal unpaid)."""
    push = push_providers(runtime)
    if not push:
        return 0
    events: list[DomainEvent] = []
    async with runtime.db.transaction() as conn:
        canceled = await cancel_ended_subscriptions(conn, now, push, BATCH)
        if canceled:
            # Nothing is owed any more: an open renewal checkout of theirs is void.
            expired = await expire_open_renewals(conn, [r["id"] for r in canceled], now)
            events += [_checkout_event("checkout.expired", r, now) for r in expired]
        events += [_subscription_event("subscription.canceled", r, now) for r in canceled]
    async with runtime.db.transaction() as conn:
        # A trial renewed early by the former engine, which moved the period at payment time
        # (rows from then): the paid period already runs past the trial's end.
        activated = await activate_ended_trials(conn, now, push, BATCH)
        events += [
            _subscription_event("subscription.updated", r, now, previous_status="TRIALING")
            for r in activated
        ]
    async with runtime.db.transaction() as conn:
        past_due = await mark_unpaid_past_due(conn, now, push, BATCH)
        events += [
            _subscription_event(
                "subscription.past_due", r, now, previous_status=r["previous_status"]
            )
            for r in past_due
        ]
    await _emit_all(runtime, events)
    return len(canceled) + len(activated) + len(past_due)


async def expire_past_due(runtime: ServiceContext, now: datetime) -> int:
    """PAST_DUE push subscriptions ``grace_days`` after their period end become EXPIRED, and
    their open renewal checkout expires."""
    push = push_providers(runtime)
    if not push:
        return 0
    grace = timedelta(days=runtime.settings.billing.grace_days)
    async with runtime.db.transaction() as conn:
        expired = await expire_past_due_subscriptions(conn, now, push, grace, BATCH)
        checkouts = await expire_open_renewals(conn, [r["id"] for r in expired], now)
    await _emit_all(
        runtime,
        [
            *(_checkout_event("checkout.expired", r, now) for r in checkouts),
            *(
                _subscription_event("subscription.expired", r, now, previous_status="PAST_DUE")
                for r in expired
            ),
        ],
    )
    return len(expired)


async def issue_renewals(runtime: ServiceContext, now: datetime) -> int:
    """Issue the renewal checkout of each push subscription whose period (or trial) ends within
    ``renewal_lead_days`` and that has none for this period yet."""
    push = push_providers(runtime)
    if not push:
        return 0
    lead = timedelta(days=runtime.settings.billing.renewal_lead_days)
    # The anti-join only saves calls: exactly-once per period is the engine's (subscription
    # row lock + the period's renewal looked up by renews_from) and the partial unique index
    # on the OPEN renewal of each subscription and period.
    due = await runtime.db.fetch(
        f"SELECT s.id, {_BOUNDARY} AS period_end FROM subscriptions s "
        f"WHERE s.provider = ANY($2) AND s.status IN ('ACTIVE', 'TRIALING', 'PAST_DUE') "
        f"AND NOT s.cancel_at_period_end AND {_BOUNDARY} - $3::interval <= $1 "
        f"AND NOT EXISTS (SELECT 1 FROM checkouts c WHERE c.subscription_id = s.id "
        f"AND c.purpose = 'renewal' AND ((c.status = 'OPEN' AND (c.prepared_at IS NOT NULL "
        # An open renewal without its provider session (its issuer died before or during the
        # provider call) is picked up again: the claim's lease decides who prepares it.
        f"OR c.session_claimed_at > clock_timestamp() - $5::interval)) "
        # Paid ahead: the next period is bought; the subscription moves into it at its start.
        f"OR (c.renews_from = {_BOUNDARY} AND c.paid_period_start IS NOT NULL) "
        # A renewal the provider just failed is retried after a pause, not on every tick.
        f"OR (c.status = 'FAILED' AND c.created_at > $1 - $4::interval))) "
        f"ORDER BY {_BOUNDARY} LIMIT {BATCH}",
        now,
        push,
        lead,
        RENEWAL_RETRY,
        timedelta(seconds=CLAIM_LEASE_SECONDS),
    )
    issued = 0
    for row in due:
        try:
            if await issue_renewal(runtime, row["id"], now):
                issued += 1
                crashpoint("renewals.issued")
        except Exception:
            # Kept for the next tick; one subscription's failure never blocks the others.
            log.exception("issuing the renewal of subscription %s failed", row["id"])
    return issued


async def issue_renewal(runtime: ServiceContext, subscription_id: uuid.UUID, now: datetime) -> bool:
    """Issue the renewal checkout of ``subscription_id``'s current period through the engine
    (which returns the existing one when another worker was first); False when there is
    nothing to issue or the provider failed."""
    try:
        result = await create_renewal_checkout(runtime, subscription_id)
    except UserInputError as exc:
        # The subscription changed since the scan (canceled, ended): nothing to issue.
        log.info("no renewal for subscription %s: %s", subscription_id, exc.message)
        return False
    if result.error is not None:
        # The checkout is FAILED; the next tick issues a fresh one for the period.
        log.warning(
            "the renewal checkout of subscription %s failed at the provider: %s",
            subscription_id,
            result.error.code,
        )
        return False
    return True


async def next_checkout_expiry(runtime: ServiceContext, now: datetime) -> datetime | None:
    """When the next OPEN checkout expires."""
    return await runtime.db.fetch_time(
        "SELECT min(expires_at) FROM checkouts WHERE status = 'OPEN' AND expires_at > $1", now
    )


async def next_subscription_moment(runtime: ServiceContext, now: datetime) -> datetime | None:
    """The next renewal issue time, period/trial end, grace end or plan change after ``now``."""
    push = push_providers(runtime)
    lead = timedelta(days=runtime.settings.billing.renewal_lead_days)
    grace = timedelta(days=runtime.settings.billing.grace_days)
    return await runtime.db.fetch_time(
        f"SELECT min(m) FROM ("
        f"SELECT min(pending_plan_at) AS m FROM subscriptions "
        f"WHERE pending_plan_id IS NOT NULL AND pending_plan_at > $1 "
        f"AND status NOT IN ('CANCELED', 'EXPIRED') "
        f"UNION ALL SELECT min(LEAST("
        f"  CASE WHEN {_BOUNDARY} - $3::interval > $1 AND NOT s.cancel_at_period_end "
        f"  THEN {_BOUNDARY} - $3::interval END, "
        f"  CASE WHEN {_BOUNDARY} > $1 THEN {_BOUNDARY} END)) "
        f"FROM subscriptions s WHERE s.provider = ANY($2) AND s.status IN ('ACTIVE', 'TRIALING') "
        f"UNION ALL SELECT min(current_period_end + $4::interval) FROM subscriptions "
        f"WHERE provider = ANY($2) AND status = 'PAST_DUE' "
        f"AND current_period_end + $4::interval > $1"
        f") moments",
        now,
        push,
        lead,
        grace,
    )
