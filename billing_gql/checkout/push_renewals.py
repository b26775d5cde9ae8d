"""The push-renewal lifecycle: the checkouts a push provider's subscription is billed through
(renewals, pending charges such as prorations) and releasing a renewal paid ahead."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.applier.engine import apply_events
from billing_gql.catalog.service import load_plans
from billing_gql.checkout.service import (
    CheckoutResult,
    checkout_ttl,
    completed_event,
    get_checkout,
    insert_checkout,
    prepare_checkout,
)
from billing_gql.context import ServiceContext
from billing_gql.core import checkout as m
from billing_gql.core.checkout import Checkout, checkout_from_row
from billing_gql.core.subscriptions import Subscription, subscription_from_row
from billing_gql.crashpoints import crashpoint
from billing_gql.errors import UserInputError
from billing_gql.invoices.service import sync_checkout_invoice
from billing_gql.money import shown
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import (
    DomainEvent,
)
from billing_gql.store.checkouts_sql import release_paid_period
from billing_gql.store.invoice_items_sql import carry_credit, carry_items_on_checkout

__all__ = [
    "PAID_AHEAD_CREDIT",
    "create_invoice_checkout",
    "create_renewal_checkout",
    "release_paid_renewal",
]

log = logging.getLogger(__name__)


async def _lock_push_subscription(
    runtime: ServiceContext, conn: asyncpg.Connection, subscription_id: UUID
) -> tuple[Subscription, Provider]:
    row = await conn.fetchrow(
        "SELECT * FROM subscriptions WHERE id = $1 FOR UPDATE", subscription_id
    )
    if row is None:
        raise UserInputError("NOT_FOUND", "no such subscription", ["subscriptionId"])
    sub = subscription_from_row(row)
    provider = runtime.providers.get_configured(sub.provider)
    if provider is None:
        raise UserInputError(
            "PROVIDER_NOT_CONFIGURED", f"provider {shown(sub.provider)} is not configured"
        )
    if type(provider).charges_renewals:
        raise UserInputError(
            "INVALID_STATE", f"{sub.provider} charges this subscription's renewals itself"
        )
    return sub, provider


async def _claimable_items(conn: asyncpg.Connection, sub: Subscription) -> list[asyncpg.Record]:
    """Pending items not held by another OPEN checkout (an expired one releases its items).

    Each claim is recorded in ``carried_by``: should money complete an expired checkout after
    all, its items are billed by it, and the engine takes them back from the newer checkout
    (see ``_Applier.settle_items``), so an item is paid by exactly one completed checkout.
    """
    return list(
        await conn.fetch(
            "SELECT i.id, i.amount_minor FROM invoice_items i WHERE i.subscription_id = $1 "
            "AND i.invoiced_at IS NULL AND i.currency = $2 AND (i.checkout_id IS NULL OR NOT "
            "EXISTS (SELECT 1 FROM checkouts c WHERE c.id = i.checkout_id AND c.status = 'OPEN'))"
            " ORDER BY i.created_at, i.id",
            sub.id,
            sub.currency,
        )
    )


async def _insert_push_checkout(
    runtime: ServiceContext,
    conn: asyncpg.Connection,
    provider: Provider,
    sub: Subscription,
    items: Sequence[asyncpg.Record],
    *,
    now: datetime,
    events: list[DomainEvent],
    **values: Any,
) -> UUID:
    """Store an OPEN push checkout (``values``: purpose, plan, amount, expiry …) of ``sub``
    that claims the pending ``items`` (see :func:`_claimable_items`), and issue its invoice
    (its events are added to ``events``, to emit once committed)."""
    checkout_id = await insert_checkout(
        conn,
        provider,
        {
            "customer_id": sub.customer_id,
            "provider": provider.name,
            "currency": sub.currency,
            "quantity": sub.quantity,
            "success_url": None,
            "cancel_url": None,
            "idempotency_key": None,
            "request_fingerprint": None,
            "subscription_id": sub.id,
            "created_at": now,
            **values,
        },
        "",
    )
    assert checkout_id is not None
    await carry_items_on_checkout(conn, checkout_id, [i["id"] for i in items])
    row = await conn.fetchrow("SELECT * FROM checkouts WHERE id = $1", checkout_id)
    events += await sync_checkout_invoice(
        conn, runtime.settings.invoices.prefix, checkout_from_row(row), now
    )
    return checkout_id


async def create_renewal_checkout(
    runtime: ServiceContext, subscription_id: UUID, *, expires_at: datetime | None = None
) -> CheckoutResult:
    """Issue the push renewal checkout of a subscription's next period (idempotent per period).

    For subscriptions whose provider does not charge renewals itself (``charges_renewals`` is
    False: manual, bank transfer). The amount is the price (of the pending plan when a plan
    change takes effect at the period end) times quantity, plus the pending invoice items (which
    are marked invoiced when this checkout completes). Paying it buys the next period, which
    starts at the current period end (``renews_from``): paid ahead, the subscription stays in
    its current period until then and moves into the paid one at that moment (the worker's
    period-end sweep); paid after it, at once (see ``_Applier.renew``).

    Credits larger than the price are never lost: the checkout takes all the pending items,
    costs 0 and completes at once (in the same transaction), and the remainder becomes a new
    pending credit item (``kind = 'credit'``, shown by ``invoicePreview``) for the next one.

    :param expires_at: when the checkout expires; default: the later of the provider's checkout
        lifetime from now and the end of the grace period after the current period end.
    :returns: the new checkout, or the one already issued for this period.
    :raises UserInputError: NOT_FOUND, PROVIDER_NOT_CONFIGURED, INVALID_STATE (not a push
        subscription, not live, or canceling at period end), UNSUPPORTED_CURRENCY.
    """
    now = await runtime.clock.now()
    completed: list[DomainEvent] | None = None
    events: list[DomainEvent] = []
    async with runtime.db.transaction() as conn:
        sub, provider = await _lock_push_subscription(runtime, conn, subscription_id)
        if sub.status not in ("TRIALING", "ACTIVE", "PAST_DUE"):
            raise UserInputError("INVALID_STATE", f"the subscription is {sub.status}")
        if sub.cancel_at_period_end:
            raise UserInputError("INVALID_STATE", "the subscription cancels at its period end")
        period_end = sub.current_period_end or now
        # This period's renewal: the open one, or the one paid already (ahead of the period
        # end, so the subscription has not moved into the period it bought yet).
        existing = await conn.fetchrow(
            "SELECT id FROM checkouts WHERE subscription_id = $1 AND "
            "purpose = 'renewal' AND renews_from = $2 "
            "AND (status = 'OPEN' OR paid_period_start IS NOT NULL)",
            sub.id,
            period_end,
        )
        if existing is None:
            checkout_id, completed = await _issue_renewal(
                runtime,
                conn,
                sub,
                provider,
                period_end,
                events=events,
                now=now,
                expires_at=expires_at,
            )
        else:
            # Open (its session is created below unless it was), or paid already.
            checkout_id = existing["id"]
    for event in events:
        await runtime.emit(event)
    if completed is not None:
        for event in completed:
            await runtime.emit(event)
        found = await get_checkout(runtime.db.pool, checkout_id)
        assert found is not None
        return CheckoutResult(found)
    crashpoint("renewal.stored")
    return await prepare_checkout(runtime, checkout_id)


async def _issue_renewal(
    runtime: ServiceContext,
    conn: asyncpg.Connection,
    sub: Subscription,
    provider: Provider,
    period_end: datetime,
    *,
    events: list[DomainEvent],
    now: datetime,
    expires_at: datetime | None,
) -> tuple[UUID, list[DomainEvent] | None]:
    """Insert the renewal checkout of the period from ``period_end`` (in the caller's
    transaction, under the subscription's lock), carrying a credit larger than the price
    forward; when nothing is left to pay it completes here. The checkout's id and, when it
    completed, the events to emit once committed."""
    plan = (await load_plans(conn, ids=[sub.plan_at(period_end)]))[0]
    price = plan.price(sub.currency)
    if price is None:
        raise UserInputError(
            "UNSUPPORTED_CURRENCY", f"plan {shown(plan.code)} has no price in {sub.currency}"
        )
    items = await _claimable_items(conn, sub)
    total = price.minor * sub.quantity + sum(i["amount_minor"] for i in items)
    amount = max(total, 0)
    grace_end = period_end + timedelta(days=runtime.settings.billing.grace_days)
    checkout_id = await _insert_push_checkout(
        runtime,
        conn,
        provider,
        sub,
        items,
        now=now,
        events=events,
        purpose=m.CheckoutPurpose.RENEWAL,
        plan_id=plan.id,
        amount_minor=amount,
        renews_from=period_end,
        expires_at=expires_at or max(now + checkout_ttl(runtime, provider), grace_end),
    )
    if total < 0:
        await carry_credit(conn, sub.id, sub.currency, total, now)
    if amount != 0:
        return checkout_id, None
    # Nothing to pay: complete it here, so that the items it took and the credit carried
    # forward are one atomic change (never both released and carried).
    completed = await apply_events(
        runtime, conn, provider.name, [completed_event(checkout_id, now)], now
    )
    return checkout_id, completed


PAID_AHEAD_CREDIT = "Credit: the next period, paid ahead before a plan change"


async def release_paid_renewal(
    conn: asyncpg.Connection, sub: Subscription, now: datetime
) -> Checkout | None:
    """A plan change of ``sub`` (push, locked) voids the next period it paid ahead: that was
    bought at the plan of then. Its price comes back as a pending credit, and the period is
    unpaid again, so a fresh renewal bills it at the new plan (less the credit). Returns the
    renewal released, if any."""
    row = await release_paid_period(conn, sub.id, sub.current_period_end, now)
    if row is None:
        return None
    released = checkout_from_row(row)
    plan = (await load_plans(conn, ids=[released.plan_id]))[0]
    price = plan.price(released.currency)
    if price is not None:
        await carry_credit(
            conn,
            sub.id,
            released.currency,
            -price.minor * released.quantity,
            now,
            description=PAID_AHEAD_CREDIT,
        )
    return released


async def create_invoice_checkout(
    runtime: ServiceContext, subscription_id: UUID
) -> CheckoutResult | None:
    """A push checkout for a subscription's pending invoice items (prorations to pay now).

    ``None`` when they add up to nothing owed (a credit waits for the next renewal). At most
    one such checkout is OPEN per subscription: an open one is returned as is.
    """
    now = await runtime.clock.now()
    events: list[DomainEvent] = []
    async with runtime.db.transaction() as conn:
        sub, provider = await _lock_push_subscription(runtime, conn, subscription_id)
        open_row = await conn.fetchrow(
            "SELECT id FROM checkouts WHERE subscription_id = $1 "
            "AND purpose = 'invoice' AND status = 'OPEN'",
            sub.id,
        )
        if open_row is not None:
            checkout_id = open_row["id"]
        else:
            items = await _claimable_items(conn, sub)
            amount = sum(i["amount_minor"] for i in items)
            if amount <= 0:
                return None
            checkout_id = await _insert_push_checkout(
                runtime,
                conn,
                provider,
                sub,
                items,
                now=now,
                events=events,
                purpose=m.CheckoutPurpose.INVOICE,
                plan_id=sub.plan_id,
                amount_minor=amount,
                expires_at=now + checkout_ttl(runtime, provider),
            )
    for event in events:
        await runtime.emit(event)
    return await prepare_checkout(runtime, checkout_id)
