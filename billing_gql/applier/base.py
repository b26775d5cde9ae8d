"""What every part of the event applier shares: periods, the live subscription of a plan, and
:class:`ApplierBase` (its state and the lookups that lock what they return)."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from billing_gql.applier.refresh import (
    Refreshed,
    can_fetch,
)
from billing_gql.catalog.service import load_plans
from billing_gql.context import ServiceContext
from billing_gql.core.catalog import Plan
from billing_gql.core.checkout import Checkout, checkout_from_row
from billing_gql.core.events import payment_event
from billing_gql.core.payments import Payment, payment_from_row
from billing_gql.core.periods import next_period_end
from billing_gql.core.subscriptions import Subscription, subscription_from_row
from billing_gql.customers.service import parse_uuid
from billing_gql.money import Money, check_amount
from billing_gql.plugins.types import (
    DomainEvent,
    PaymentInfo,
)
from billing_gql.store.checkouts_sql import add_checkout_paid
from billing_gql.store.customers_sql import remember_provider_customer
from billing_gql.store.payments_sql import insert_payment_row
from billing_gql.store.subscriptions_sql import enter_subscription_period

log = logging.getLogger("billing_gql.applier.engine")


class ApplyError(Exception):
    """An event cannot be applied (yet): the delivery is kept as failed and retried."""


def initial_period(
    plan: Plan, start: datetime, trial_days: int
) -> tuple[str, datetime, datetime, datetime | None, datetime]:
    """A new subscription's (status, period start, period end, trial end, billing anchor).

    With a trial (``trial_days``: what its checkout granted) the first period is the trial,
    and paid periods are anchored at its end.
    """
    if trial_days > 0:
        trial_end = start + timedelta(days=trial_days)
        return "TRIALING", start, trial_end, trial_end, trial_end
    end = next_period_end(start, plan.interval, plan.interval_count, start)
    return "ACTIVE", start, end, None, start


def next_period(sub: Subscription, plan: Plan, start: datetime) -> tuple[datetime, datetime]:
    """The billing anchor and the end of ``sub``'s period on ``plan`` that starts at ``start``.

    The anchor stays when ``start`` is one of its boundaries at ``plan``'s interval (MONTH and
    YEAR keep the anchor's day: Jan 31 → Feb 28 → Mar 31); otherwise (an interval change, or
    access that lapsed and starts again) the new period starts a new series at ``start``.
    """
    anchor = sub.billing_anchor or sub.current_period_start or start
    if anchor != start and (
        anchor > start
        or next_period_end(
            anchor, plan.interval, plan.interval_count, start - timedelta(microseconds=1)
        )
        != start
    ):
        anchor = start
    return anchor, next_period_end(anchor, plan.interval, plan.interval_count, start)


LIVE_FOR_PLAN = ("TRIALING", "ACTIVE", "PAST_DUE", "PAUSED")
"""The statuses the unique index ``subscriptions_live_plan_key`` covers: one subscription in
them per (customer, plan), legacy duplicates (from before the index) aside."""


async def live_subscription(
    conn: asyncpg.Connection, customer_id: UUID, plan_id: UUID, *, besides: UUID | None = None
) -> Subscription | None:
    """The customer's live subscription to the plan (other than ``besides``), locked."""
    row = await conn.fetchrow(
        "SELECT * FROM subscriptions WHERE customer_id = $1 AND plan_id = $2 "
        "AND status = ANY($3::text[]) AND NOT legacy_duplicate AND id IS DISTINCT FROM $4 "
        "ORDER BY created_at LIMIT 1 FOR UPDATE",
        customer_id,
        plan_id,
        list(LIVE_FOR_PLAN),
        besides,
    )
    return subscription_from_row(row) if row else None


async def enter_period(
    conn: asyncpg.Connection,
    sub: Subscription,
    plan: Plan,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
) -> Subscription:
    """Move ``sub`` (locked) into the paid period ``[start, end)`` on ``plan``: ACTIVE, with
    a pending change to ``plan`` done; the caller emits the event.

    A change to a plan the customer holds live otherwise (bought meanwhile) cannot happen
    (one live subscription per customer and plan): ``sub`` stays on its plan."""
    if plan.id != sub.plan_id:
        other = await live_subscription(conn, sub.customer_id, plan.id, besides=sub.id)
        if other is not None:
            log.warning(
                "subscription %s stays on its plan: its customer holds the new one in %s",
                sub.id,
                other.id,
            )
            plan = (await load_plans(conn, ids=[sub.plan_id]))[0]
    anchor, _ = next_period(sub, plan, start)
    row = await enter_subscription_period(
        conn, sub.id, plan_id=plan.id, start=start, end=end, anchor=anchor, now=now
    )
    return subscription_from_row(row)


async def lock_checkout_row(
    conn: asyncpg.Connection, where: str, *args: object
) -> asyncpg.Record | None:
    """The checkout ``SELECT id, subscription_id FROM checkouts WHERE <where>`` finds first,
    locked in the documented lock order (docs/architecture.md, "Lock order"): its subscription
    first (a push checkout names it from the start; a first purchase once completed), then the
    checkout itself. The plan change, the subscription operations and the sweeps lock a
    subscription before its checkouts, so a delivery paying a renewal can never hold the
    checkout while waiting for the subscription they hold."""
    # One statement finds the checkout and locks its subscription (the CTE runs as the
    # scalar subquery reads it); the next locks the checkout.
    peek = await conn.fetchrow(
        f"WITH c AS (SELECT id, subscription_id FROM checkouts WHERE {where}), "  # noqa: S608
        "s AS (SELECT s.id FROM subscriptions s JOIN c ON s.id = c.subscription_id "
        "FOR UPDATE OF s) SELECT c.id, (SELECT count(*) FROM s) AS locked FROM c",
        *args,
    )
    if peek is None:
        return None
    return await conn.fetchrow("SELECT * FROM checkouts WHERE id = $1 FOR UPDATE", peek["id"])


class AlreadySubscribed(Exception):
    """A subscription would be a second live one of its customer to its plan."""

    def __init__(self, existing: Subscription) -> None:
        super().__init__(f"customer already has live subscription {existing.id} to this plan")
        self.existing = existing


class ApplierBase:
    def __init__(
        self,
        runtime: ServiceContext,
        conn: asyncpg.Connection,
        provider: str,
        now: datetime,
        refreshed: Refreshed | None = None,
    ):
        self.runtime = runtime
        self.conn = conn
        self.provider = provider
        self.now = now
        self.out: list[DomainEvent] = []
        self.refreshed: Refreshed = refreshed or {}
        instance = runtime.providers.get_configured(provider)
        self.can_fetch = instance is not None and can_fetch(instance)
        self.retry_unsettled = True
        """Raise :class:`ApplyError` (retry later) for a tie that could not be settled; the
        results of our own operations leave it to the provider's delivery instead."""

    async def lock_checkout(
        self, checkout_id: str | None, provider_checkout_id: str | None
    ) -> Checkout | None:
        uid = parse_uuid(checkout_id)
        if uid is None and provider_checkout_id is None:
            return None
        row = await lock_checkout_row(
            self.conn,
            "provider = $1 AND (id = $2 OR ($3::text IS NOT NULL AND provider_checkout_id = $3)) "
            "ORDER BY (id = $2) DESC LIMIT 1",
            self.provider,
            uid,
            provider_checkout_id,
        )
        return checkout_from_row(row) if row else None

    async def lock_subscription(
        self,
        *,
        provider_subscription_id: str | None = None,
        subscription_id: str | UUID | None = None,
        origin_checkout_id: UUID | None = None,
    ) -> Subscription | None:
        if provider_subscription_id:
            row = await self.conn.fetchrow(
                "SELECT * FROM subscriptions WHERE provider = $1 AND provider_subscription_id = $2 "
                "FOR UPDATE",
                self.provider,
                provider_subscription_id,
            )
            if row:
                return subscription_from_row(row)
        uid = parse_uuid(subscription_id) if subscription_id is not None else None
        if uid is not None:
            row = await self.conn.fetchrow(
                "SELECT * FROM subscriptions WHERE provider = $1 AND id = $2 FOR UPDATE",
                self.provider,
                uid,
            )
            if row:
                return subscription_from_row(row)
        if origin_checkout_id is not None:
            row = await self.conn.fetchrow(
                "SELECT * FROM subscriptions WHERE origin_checkout_id = $1 FOR UPDATE",
                origin_checkout_id,
            )
            if row:
                return subscription_from_row(row)
        return None

    async def plan(self, plan_id: UUID) -> Plan:
        return (await load_plans(self.conn, ids=[plan_id]))[0]

    async def plan_id_for_ref(self, ref: str | None, currency: str | None) -> UUID | None:
        """The plan a provider reference names (the one for ``currency``, else the one
        without a currency); one statement, the plan itself not loaded."""
        if not ref:
            return None
        rows = await self.conn.fetch(
            "SELECT plan_id, currency FROM plan_provider_refs WHERE provider = $1 AND ref = $2",
            self.provider,
            ref,
        )
        if not rows:
            return None
        cur = currency.upper() if currency else None
        best = sorted(rows, key=lambda r: (r["currency"] != cur, r["currency"] is not None))[0]
        return best["plan_id"]  # type: ignore[no-any-return]

    async def resolve_customer(
        self,
        customer_id: str | None = None,
        external_id: str | None = None,
        provider_customer_id: str | None = None,
    ) -> UUID | None:
        """Our customer from our id (metadata), the app's external id, or the provider's id."""
        uid = parse_uuid(customer_id)
        if uid is not None:
            found = await self.conn.fetchval("SELECT id FROM customers WHERE id = $1", uid)
            if found is not None:
                return uid
        if external_id:
            found = await self.conn.fetchval(
                "SELECT id FROM customers WHERE external_id = $1", external_id
            )
            if found is not None:
                return found  # type: ignore[no-any-return]
        if provider_customer_id:
            found = await self.conn.fetchval(
                "SELECT customer_id FROM customer_provider_accounts WHERE provider = $1 "
                "AND provider_customer_id = $2",
                self.provider,
                provider_customer_id,
            )
            if found is not None:
                return found  # type: ignore[no-any-return]
        return None

    async def learn_customer(
        self, customer_id: UUID | None, provider_customer_id: str | None
    ) -> None:
        if customer_id is None or not provider_customer_id:
            return

        await remember_provider_customer(
            self.conn, customer_id, self.provider, provider_customer_id, self.now
        )

    # -- payments -------------------------------------------------------------------------------

    async def insert_payment(
        self,
        info: PaymentInfo,
        occurred_at: datetime,
        *,
        status: str,
        checkout: Checkout | None,
        customer_id: UUID | None,
        subscription_id: UUID | None,
        provider_ref: str | None = None,
    ) -> Payment | None:
        """Record money once per (provider, provider_ref); ``None`` for a repeat.

        :param provider_ref: record it under this key instead of ``info.provider_ref``.
        """
        check_amount(info.amount.minor)  # bigint's reach; AmountTooLarge fails the delivery
        row = await insert_payment_row(
            self.conn,
            provider=self.provider,
            provider_ref=provider_ref or info.provider_ref,
            status=status,
            amount_minor=info.amount.minor,
            currency=info.amount.currency,
            checkout_id=checkout.id if checkout else None,
            customer_id=customer_id,
            subscription_id=subscription_id,
            reference=info.reference,
            details=dict(info.details) or None,
            received_at=info.received_at or occurred_at,
            now=self.now,
        )
        return payment_from_row(row) if row else None

    async def conflict(self, info: PaymentInfo) -> str | None:
        """Why ``info``, whose reference is recorded already, is not a mere repeat: the
        reference was received with another amount (``None``: same amount, a repeat)."""
        seen = await self.conn.fetchrow(
            "SELECT amount_minor, currency FROM payments WHERE provider = $1 AND provider_ref = $2",
            self.provider,
            info.provider_ref,
        )
        if seen is None or (seen["amount_minor"], seen["currency"]) == (
            info.amount.minor,
            info.amount.currency,
        ):
            return None
        return (
            f"reference {info.provider_ref} was already received with "
            f"{Money(seen['amount_minor'], seen['currency'])}"
        )

    async def flag_payment(self, info: PaymentInfo, occurred_at: datetime, reason: str) -> None:
        """Keep money that must not count as a ``flagged`` payment (``details.flag`` says why)
        and announce ``payment.flagged``. It is recorded under
        ``<provider_ref>#<amount><currency>``: it never takes the reference of the money
        that counts, and its own repeats stay repeats."""
        log.warning(
            "%s payment %s (%s) flagged: %s", self.provider, info.provider_ref, info.amount, reason
        )
        flagged = replace(info, details={**info.details, "flag": reason})
        payment = await self.insert_payment(
            flagged,
            occurred_at,
            status="flagged",
            checkout=None,
            customer_id=None,
            subscription_id=None,
            provider_ref=f"{info.provider_ref}#{info.amount.minor}{info.amount.currency}",
        )
        if payment is not None:
            self.out.append(payment_event("payment.flagged", payment, self.now))

    async def add_paid(self, checkout: Checkout, amount_minor: int) -> Checkout:
        row = await add_checkout_paid(self.conn, checkout.id, amount_minor, self.now)
        return checkout_from_row(row)
