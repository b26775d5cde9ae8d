"""Changing a subscription's plan (docs/api.md#proration): validate, decide (proration,
when it takes effect), change it at the provider when the provider runs the subscription,
write our row and the proration item in one transaction, then bill what is due now.

Everything is validated before anything is written or any provider is called; a provider
error is a user error and leaves our state untouched.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

import asyncpg

from billing_gql.applier.engine import apply_operation_result, live_subscription
from billing_gql.catalog.service import load_plans
from billing_gql.checkout.push_renewals import create_invoice_checkout, release_paid_renewal
from billing_gql.checkout.service import holds_plan
from billing_gql.context import ServiceContext
from billing_gql.core.catalog import Plan
from billing_gql.core.events import subscription_event
from billing_gql.core.periods import next_period_end
from billing_gql.core.subscriptions import LIVE_STATUSES, Subscription
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.money import Money, exponent, round_line, shown
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import (
    DomainEvent,
    PlanChangeRequest,
    ProrationBehavior,
    ProviderCapability,
)
from billing_gql.routing import plan_info, usage_problem
from billing_gql.store.invoice_items_sql import record_proration_item
from billing_gql.subscriptions.steps import (
    Answer,
    at_provider,
    close_push_checkouts,
    finish,
    get_subscription,
    is_managed,
    log,
    settle_answer,
    subscription_ref,
    update_row,
)

__all__ = ["PlanChange", "change_plan", "proration_minor"]

_CTX = decimal.Context(prec=60)


@dataclass(frozen=True)
class PlanChange:
    subscription: Subscription
    proration: Money | None
    """``None`` only for ``NONE``; negative is a credit."""
    effective_at: datetime


def proration_minor(
    *,
    old_minor: int,
    new_minor: int,
    quantity: int,
    remaining_seconds: int,
    period_seconds: int,
    currency: str,
    interval_change: bool = False,
) -> int:
    """docs/api.md#proration, rounded once half-up to the currency's minor unit.

    Same interval: ``(new - old) * quantity * remaining / period``. An interval change starts a
    new period now: the new price in full minus the old plan's remaining time.
    """
    if period_seconds <= 0:
        remaining, period = Decimal(0), Decimal(1)
    else:
        remaining, period = Decimal(remaining_seconds), Decimal(period_seconds)
    if interval_change:
        amount = _CTX.subtract(
            Decimal(new_minor * quantity),
            _CTX.divide(_CTX.multiply(Decimal(old_minor * quantity), remaining), period),
        )
    else:
        amount = _CTX.divide(
            _CTX.multiply(Decimal((new_minor - old_minor) * quantity), remaining), period
        )
    return round_line(amount.scaleb(-exponent(currency), _CTX), currency)


async def change_plan(
    runtime: ServiceContext,
    subscription_id: UUID | None,
    plan_code: str,
    *,
    proration: ProrationBehavior = ProrationBehavior.CREATE_PRORATIONS,
    preview: bool = False,
) -> PlanChange:
    """Move a live subscription to another plan in the same currency (docs/api.md#proration).

    Same interval: the plan changes now and ``(new - old) * quantity * remaining / period``
    is owed (a negative amount is a credit). An interval change starts a new period now:
    the new price in full minus the old plan's remaining time. ``NONE``: no proration; the
    change happens now where the provider can change plans, else at the period end
    (``pending_plan``). During a trial nothing was paid, so nothing is prorated.

    ``preview`` computes the same answer and changes nothing (no provider call).
    """
    move = await _validate(runtime, subscription_id, plan_code)
    now = await runtime.clock.now()
    decision = _decide(move, proration, now)
    if preview:
        return PlanChange(move.sub, decision.money, decision.effective_at)
    answer = await _ask_provider(runtime, move, proration)
    events, effective_at, invoice_now = await _write(runtime, move, decision, answer, now)
    result = await finish(runtime, move.sub.id, events)
    if invoice_now:
        await _invoice_now(runtime, move.sub.id)
    return PlanChange(result, decision.money, effective_at)


@dataclass(frozen=True)
class _Move:
    """A validated plan change: the subscription, its provider, the plan it leaves and the
    one it moves to."""

    sub: Subscription
    provider: Provider
    old: Plan
    new: Plan


async def _validate(runtime: ServiceContext, subscription_id: UUID | None, plan_code: str) -> _Move:
    """Every problem at once, before anything is written or any provider is called.

    :raises UserInputErrors: NOT_FOUND, INVALID_STATE, PLAN_ARCHIVED, INVALID_INPUT,
        UNSUPPORTED_CURRENCY, ALREADY_SUBSCRIBED, PROVIDER_NOT_CONFIGURED, NOT_SUPPORTED,
        PROVIDER_REF_MISSING.
    """
    sub = await get_subscription(runtime.db.pool, subscription_id)
    if sub is None:
        raise UserInputError("NOT_FOUND", "no such subscription", ["subscriptionId"])
    provider = runtime.providers.get_configured(sub.provider)
    plans = await load_plans(runtime.db.pool, ids=[sub.plan_id])
    old = plans[0]
    found = await load_plans(runtime.db.pool, codes=[plan_code])
    new = found[0] if found else None
    p: list[UserInputError] = []
    if sub.status not in LIVE_STATUSES:
        p.append(
            UserInputError("INVALID_STATE", f"the subscription is {sub.status}", ["subscriptionId"])
        )
    if new is None:
        p.append(UserInputError("NOT_FOUND", f"no plan {shown(plan_code)}", ["planCode"]))
    else:
        p += await _target_problems(runtime, sub, old, new)
    if provider is None:
        p.append(
            UserInputError(
                "PROVIDER_NOT_CONFIGURED", f"provider {shown(sub.provider)} is not configured"
            )
        )
    elif new is not None and not p and is_managed(provider):
        if not provider.supports(ProviderCapability.CHANGE_PLAN):
            p.append(UserInputError("NOT_SUPPORTED", f"{provider.name} cannot change plans"))
        elif (
            type(provider).needs_provider_ref
            and new.provider_ref(provider.name, sub.currency) is None
        ):
            p.append(
                UserInputError(
                    "PROVIDER_REF_MISSING",
                    f"plan {shown(new.code)} has no {provider.name} reference",
                    ["planCode"],
                )
            )
        elif (problem := usage_problem(type(provider), new, sub.currency)) is not None:
            p.append(UserInputError(problem[0], problem[1], ["planCode"]))
    if p:
        raise UserInputErrors(p)
    assert new is not None and provider is not None
    return _Move(sub, provider, old, new)


async def _target_problems(
    runtime: ServiceContext, sub: Subscription, old: Plan, new: Plan
) -> list[UserInputError]:
    """What keeps the subscription from moving to ``new`` (the first such problem)."""
    if new.archived:
        return [
            UserInputError("PLAN_ARCHIVED", f"plan {shown(new.code)} is archived", ["planCode"])
        ]
    if new.interval == "ONE_TIME":
        return [
            UserInputError(
                "INVALID_INPUT", "a subscription cannot move to a ONE_TIME plan", ["planCode"]
            )
        ]
    if new.id == old.id:
        return [
            UserInputError(
                "INVALID_INPUT", "the subscription is on this plan already", ["planCode"]
            )
        ]
    if new.price(sub.currency) is None:
        return [
            UserInputError(
                "UNSUPPORTED_CURRENCY",
                f"plan {shown(new.code)} has no price in {sub.currency}",
                ["planCode"],
            )
        ]
    if await holds_plan(runtime.db.pool, sub.customer_id, new.id):
        # One live subscription per customer and plan (``subscriptions_live_plan_key``).
        return [_already_subscribed(new)]
    return []


def _already_subscribed(new: Plan) -> UserInputError:
    return UserInputError(
        "ALREADY_SUBSCRIBED",
        f"the customer already has a live subscription to plan {shown(new.code)}",
        ["planCode"],
    )


@dataclass(frozen=True)
class _Decision:
    """What the change costs and when it takes effect."""

    proration: ProrationBehavior
    amount: int | None
    """``None`` only for ``NONE``; negative is a credit."""
    currency: str
    deferred: bool
    """Waits for the period end (``pending_plan``)."""
    effective_at: datetime
    restart: bool
    """An interval change that starts a new period now."""

    @property
    def money(self) -> Money | None:
        return Money(self.amount, self.currency) if self.amount is not None else None


def _decide(move: _Move, proration: ProrationBehavior, now: datetime) -> _Decision:
    sub, old, new, provider = move.sub, move.old, move.new, move.provider
    old_price, new_price = old.price(sub.currency), new.price(sub.currency)
    assert new_price is not None
    interval_change = (old.interval, old.interval_count) != (new.interval, new.interval_count)
    trialing = sub.status == "TRIALING"
    start, end = sub.current_period_start, sub.current_period_end
    period_s = int((end - start) // timedelta(seconds=1)) if start and end else 0
    remaining_s = min(max(int((end - now) // timedelta(seconds=1)), 0), period_s) if end else 0
    amount: int | None = None
    if proration != ProrationBehavior.NONE:
        amount = (
            0
            if trialing
            else proration_minor(
                old_minor=old_price.minor if old_price else 0,
                new_minor=new_price.minor,
                quantity=sub.quantity,
                remaining_seconds=remaining_s,
                period_seconds=period_s,
                currency=sub.currency,
                interval_change=interval_change,
            )
        )
    # NONE without a provider able to change plans now waits for the period end.
    deferred = (
        proration == ProrationBehavior.NONE
        and not is_managed(provider)
        and not provider.supports(ProviderCapability.CHANGE_PLAN)
        and end is not None
    )
    return _Decision(
        proration=proration,
        amount=amount,
        currency=sub.currency,
        deferred=deferred,
        effective_at=end if deferred and end is not None else now,
        restart=interval_change and not trialing and proration != ProrationBehavior.NONE,
    )


async def _ask_provider(
    runtime: ServiceContext, move: _Move, proration: ProrationBehavior
) -> Answer | None:
    """Change the plan at the provider first when it runs the subscription; its answer,
    settled before the transaction."""
    provider = move.provider
    snapshot = None
    if is_managed(provider):
        request = PlanChangeRequest(
            subscription=await subscription_ref(runtime, move.sub),
            new_plan=plan_info(move.new, provider.name, move.sub.currency),
            proration=proration,
        )
        snapshot = await at_provider(provider, provider.change_subscription_plan(request))
    return await settle_answer(runtime, provider, snapshot)


async def _write(
    runtime: ServiceContext, move: _Move, d: _Decision, answer: Answer | None, now: datetime
) -> tuple[list[DomainEvent], datetime, bool]:
    """One transaction under the subscription's lock: the plan (or the pending plan) and the
    proration item. The events to emit, when it takes effect, and whether to invoice now."""
    sub, old, new, provider = move.sub, move.old, move.new, move.provider
    managed = is_managed(provider)
    events: list[DomainEvent] = []
    effective_at = d.effective_at
    invoice_now = False
    async with runtime.db.transaction() as conn:
        locked = await _lock_unchanged(conn, move, managed)
        if not managed:
            # The next period's renewal was priced at the old plan (and, on an interval
            # change, for a period that is gone): an open one is void, one paid ahead is
            # credited; the worker issues a fresh one at the new plan.
            await release_paid_renewal(conn, locked, now)
            events += await close_push_checkouts(conn, sub.id, now, purpose="renewal")
        if answer is not None:
            events += await apply_operation_result(
                runtime, conn, provider.name, answer.snapshot, now, refreshed=answer.refreshed
            )
            effective_at = await _pend_if_scheduled(conn, sub.id, new, now, effective_at)
        elif d.deferred:
            updated = await update_row(
                conn, locked, now, pending_plan_id=new.id, pending_plan_at=effective_at
            )
            events.append(subscription_event("subscription.updated", updated, now))
        else:
            updated = await _switch(conn, locked, new, d.restart, now)
            events.append(subscription_event("subscription.updated", updated, now))
        if d.amount:
            # Provider-managed: the provider bills it; kept for the record (already invoiced).
            await record_proration_item(
                conn,
                sub.id,
                description=f"Proration: {old.code} -> {new.code}",
                currency=sub.currency,
                amount_minor=d.amount,
                invoiced_at=now if managed else None,
                now=now,
            )
            invoice_now = (
                not managed
                and d.amount > 0
                and (d.restart or d.proration == ProrationBehavior.ALWAYS_INVOICE)
            )
    return events, effective_at, invoice_now


async def _lock_unchanged(conn: asyncpg.Connection, move: _Move, managed: bool) -> Subscription:
    """The subscription, locked, still live on the plan it was validated on.

    :raises UserInputError: INVALID_STATE (changed meanwhile), ALREADY_SUBSCRIBED (the new
        plan bought meanwhile by a push subscription's customer).
    """
    sub, new = move.sub, move.new
    locked = await get_subscription(conn, sub.id, lock=True)
    assert locked is not None
    if locked.status not in LIVE_STATUSES or locked.plan_id != sub.plan_id:
        raise UserInputError("INVALID_STATE", "the subscription changed meanwhile; retry")
    if not managed and await live_subscription(conn, sub.customer_id, new.id, besides=sub.id):
        # Bought meanwhile (the early check passed): one live subscription per plan.
        raise _already_subscribed(new)
    return locked


async def _pend_if_scheduled(
    conn: asyncpg.Connection, sub_id: UUID, new: Plan, now: datetime, effective_at: datetime
) -> datetime:
    """After the provider's answer is applied: when the provider schedules the change for
    the period end, record it as the pending plan. When the change takes effect."""
    after = await get_subscription(conn, sub_id)
    assert after is not None
    if after.plan_id == new.id:
        return effective_at
    # The provider schedules it for the period end.
    effective_at = after.current_period_end or now
    await update_row(conn, after, now, pending_plan_id=new.id, pending_plan_at=effective_at)
    return effective_at


async def _switch(
    conn: asyncpg.Connection, locked: Subscription, new: Plan, restart: bool, now: datetime
) -> Subscription:
    """Move our row to the new plan now (a new period from now on an interval change)."""
    values: dict[str, object] = {
        "plan_id": new.id,
        "pending_plan_id": None,
        "pending_plan_at": None,
    }
    if restart:
        values.update(
            current_period_start=now,
            current_period_end=next_period_end(now, new.interval, new.interval_count, now),
            billing_anchor=now,
        )
    return await update_row(conn, locked, now, **values)


async def _invoice_now(runtime: ServiceContext, sub_id: UUID) -> None:
    """The new period (or ALWAYS_INVOICE) is paid now, not at the next renewal."""
    charged = await create_invoice_checkout(runtime, sub_id)
    if charged is not None and charged.error is not None:
        log.warning(
            "pending charges of %s: checkout failed (%s); the next renewal bills them",
            sub_id,
            charged.error.message,
        )
