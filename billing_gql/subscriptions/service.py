"""Subscription operations: cancel, resume, pause, change plan (with proration), portal.

A provider-managed subscription (its provider ``charges_renewals``) is changed at the provider
through the plugin first; the snapshot it returns is applied like a webhook's. A push
subscription (manual, bank transfer) is the engine's own: it changes here, and a proration
becomes a pending ``invoice_items`` row billed by the next push checkout. Everything is
validated before anything is written or any provider is called; a provider error is a user
error and leaves our state untouched.
"""

from __future__ import annotations

import decimal
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar
from uuid import UUID

import asyncpg

from billing_gql.applier.engine import apply_operation_result, live_subscription
from billing_gql.applier.refresh import refresh_snapshot, subscription_refs
from billing_gql.catalog.service import load_plans
from billing_gql.checkout.push_renewals import create_invoice_checkout, release_paid_renewal
from billing_gql.checkout.service import holds_plan
from billing_gql.context import ServiceContext
from billing_gql.core.checkout import checkout_from_row
from billing_gql.core.events import checkout_event, subscription_event
from billing_gql.core.periods import next_period_end
from billing_gql.core.subscriptions import (
    ENDED_STATUSES,
    LIVE_STATUSES,
    Subscription,
    subscription_from_row,
)
from billing_gql.customers.service import load_customers
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.money import Money, exponent, round_line
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import (
    DomainEvent,
    PlanChangeRequest,
    PortalRequest,
    ProrationBehavior,
    ProviderCapability,
    SubscriptionRef,
    SubscriptionSnapshot,
)
from billing_gql.routing import (
    customer_info,
    error_text,
    log_failure,
    plan_info,
    redact,
)
from billing_gql.store.checkouts_sql import expire_open_push_checkouts
from billing_gql.store.invoice_items_sql import record_proration_item
from billing_gql.store.subscriptions_sql import update_subscription
from billing_gql.validation import Problems

__all__ = [
    "PlanChange",
    "cancel_subscription",
    "change_plan",
    "create_portal_session",
    "get_subscription",
    "load_subscriptions",
    "pause_subscription",
    "proration_minor",
    "resume_subscription",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

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


# -- loading ----------------------------------------------------------------------------------


async def load_subscriptions(
    conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[UUID]
) -> list[Subscription]:
    """The subscriptions with these ids (in no particular order)."""
    rows = await conn.fetch("SELECT * FROM subscriptions WHERE id = ANY($1::uuid[])", list(ids))
    return [subscription_from_row(r) for r in rows]


async def get_subscription(
    conn: asyncpg.Connection | asyncpg.Pool, subscription_id: UUID | None, *, lock: bool = False
) -> Subscription | None:
    if subscription_id is None:
        return None
    sql = (
        "SELECT * FROM subscriptions WHERE id = $1 FOR UPDATE"
        if lock
        else "SELECT * FROM subscriptions WHERE id = $1"
    )
    row = await conn.fetchrow(sql, subscription_id)
    return subscription_from_row(row) if row else None


async def _require(
    runtime: ServiceContext, subscription_id: UUID | None
) -> tuple[Subscription, Provider]:
    sub = await get_subscription(runtime.db.pool, subscription_id)
    if sub is None:
        raise UserInputError("NOT_FOUND", "no such subscription", ["subscriptionId"])
    provider = runtime.providers.get_configured(sub.provider)
    if provider is None:
        raise UserInputError(
            "PROVIDER_NOT_CONFIGURED", f"provider {sub.provider!r} is not configured"
        )
    return sub, provider


def _managed(provider: Provider) -> bool:
    """The provider runs this subscription (renews it itself): change it there first."""
    return type(provider).charges_renewals


async def _ref(runtime: ServiceContext, sub: Subscription) -> SubscriptionRef:
    [ref] = await subscription_refs(runtime.db.pool, [sub])
    return ref


async def _call_provider(provider: Provider, call: Awaitable[_T], doing: str) -> _T:
    """Await a plugin call, turning any failure into a user error (never secrets);
    ``doing`` says what failed in the log."""
    try:
        return await call
    except UserInputError as exc:  # NotSupported, ProviderError, ProviderUnavailable …
        # Keep the provider's field path: the mutation puts it under its argument.
        raise UserInputError(exc.code, redact(provider, exc.message), exc.field) from None
    except Exception as exc:
        log_failure(log, provider, exc, "provider %s failed to %s", provider.name, doing)
        raise UserInputError("PROVIDER_ERROR", error_text(provider, exc)) from None


async def _at_provider(
    provider: Provider, call: Awaitable[SubscriptionSnapshot | None]
) -> SubscriptionSnapshot | None:
    """A subscription operation at the provider: the state it answered with, if any."""
    result = await _call_provider(provider, call, "run a subscription operation")
    return result if isinstance(result, SubscriptionSnapshot) else None


@dataclass(frozen=True)
class _Answer:
    """What a provider operation answered, ready to apply (re-fetched when not newer)."""

    snapshot: SubscriptionSnapshot
    refreshed: dict[str, datetime]


async def _answer(
    runtime: ServiceContext, provider: Provider, snapshot: SubscriptionSnapshot | None
) -> _Answer | None:
    """Before the transaction: settle the answer's order against what we hold (a provider
    call never runs under a row lock)."""
    if snapshot is None:
        return None
    try:
        settled, refreshed = await refresh_snapshot(runtime, provider, snapshot)
    except UserInputError as exc:
        # The operation itself succeeded at the provider: apply its own answer; the
        # provider's delivery about the change settles the order later.
        log.warning("re-fetching after a %s operation failed: %s", provider.name, exc.message)
        return _Answer(snapshot, {})
    return _Answer(settled, refreshed)


async def _update(
    conn: asyncpg.Connection, sub: Subscription, now: datetime, **values: object
) -> Subscription:
    return subscription_from_row(await update_subscription(conn, sub.id, now, values))


async def _operate(
    runtime: ServiceContext,
    sub: Subscription,
    provider: Provider,
    snapshot: SubscriptionSnapshot | None,
    change: Callable[[Subscription, datetime], dict[str, object]],
    *,
    ends_now: bool = False,
) -> Subscription:
    """Record a cancel, resume or pause: the state the provider answered with when it runs
    the subscription, else ``change(locked, now)``'s columns on our row (``change`` raises
    ``INVALID_STATE`` when the row changed meanwhile). ``ends_now``: nothing more is owed, so
    its open push checkouts expire. Emits the events once committed."""
    answer = await _answer(runtime, provider, snapshot)
    now = await runtime.clock.now()
    events: list[DomainEvent] = []
    async with runtime.db.transaction() as conn:
        if answer is not None:
            events += await apply_operation_result(
                runtime, conn, provider.name, answer.snapshot, now, refreshed=answer.refreshed
            )
        else:
            locked = await get_subscription(conn, sub.id, lock=True)
            assert locked is not None
            updated = await _update(conn, locked, now, **change(locked, now))
            events.append(subscription_event("subscription.updated", updated, now))
        if ends_now:
            events += await _close_push_checkouts(conn, sub.id, now)
    return await _finish(runtime, sub.id, events)


async def _finish(runtime: ServiceContext, sub_id: UUID, events: list[DomainEvent]) -> Subscription:
    """Emit the committed change's events; the subscription as it now is."""
    for event in events:
        await runtime.emit(event)
    found = await get_subscription(runtime.db.pool, sub_id)
    assert found is not None
    return found


# -- cancel, resume, pause --------------------------------------------------------------------


async def cancel_subscription(
    runtime: ServiceContext, subscription_id: UUID | None, *, at_period_end: bool = True
) -> Subscription:
    """Cancel at the period end (it stays live and entitled until then) or now (CANCELED).

    :raises UserInputError: NOT_FOUND; INVALID_STATE when already ended (or, at period end,
        not live); provider errors.
    """
    sub, provider = await _require(runtime, subscription_id)
    if sub.status in ENDED_STATUSES:
        raise UserInputError("INVALID_STATE", f"the subscription is already {sub.status}")
    if at_period_end and sub.status not in LIVE_STATUSES:
        raise UserInputError(
            "INVALID_STATE", f"a {sub.status} subscription can only be canceled now"
        )
    snapshot = None
    if _managed(provider):
        ref = await _ref(runtime, sub)
        snapshot = await _at_provider(
            provider, provider.cancel_subscription(ref, at_period_end=at_period_end)
        )

    def change(locked: Subscription, now: datetime) -> dict[str, object]:
        if locked.status in ENDED_STATUSES:
            raise UserInputError("INVALID_STATE", f"the subscription is already {locked.status}")
        if at_period_end:
            return {"cancel_at_period_end": True}
        return {
            "status": "CANCELED",
            "canceled_at": now,
            "ended_at": now,
            "cancel_at_period_end": False,
        }

    return await _operate(runtime, sub, provider, snapshot, change, ends_now=not at_period_end)


async def _close_push_checkouts(
    conn: asyncpg.Connection, subscription_id: UUID, now: datetime, *, purpose: str | None = None
) -> list[DomainEvent]:
    """An ended subscription's open renewal/charges checkouts (or those of ``purpose``)
    expire: nothing more is owed for them."""
    rows = await expire_open_push_checkouts(conn, subscription_id, now, purpose)
    return [checkout_event("checkout.expired", checkout_from_row(r), now) for r in rows]


async def resume_subscription(
    runtime: ServiceContext, subscription_id: UUID | None, *, unpause: bool = True
) -> Subscription:
    """Undo a pending cancel, or resume a pause.

    :param unpause: whether a pause may be resumed (admins only: a pause is the operator's
        decision); without it only a pending cancel is undone, and a subscription paused
        meanwhile is ``INVALID_STATE``.
    :raises UserInputError: NOT_FOUND; INVALID_STATE when neither applies; provider errors.
    """
    sub, provider = await _require(runtime, subscription_id)
    pending_cancel = sub.cancel_at_period_end and sub.status in LIVE_STATUSES
    if not pending_cancel and (sub.status != "PAUSED" or not unpause):
        raise UserInputError(
            "INVALID_STATE", "only a pending cancel or a paused subscription can be resumed"
        )
    snapshot = None
    if _managed(provider):
        snapshot = await _at_provider(
            provider, provider.resume_subscription(await _ref(runtime, sub))
        )

    def change(locked: Subscription, now: datetime) -> dict[str, object]:
        if locked.status == "PAUSED" and unpause:
            return {"status": "ACTIVE", "paused_at": None}
        if locked.cancel_at_period_end and locked.status in LIVE_STATUSES:
            return {"cancel_at_period_end": False, "canceled_at": None}
        raise UserInputError("INVALID_STATE", "nothing to resume")

    return await _operate(runtime, sub, provider, snapshot, change)


async def pause_subscription(runtime: ServiceContext, subscription_id: UUID | None) -> Subscription:
    """Pause a live subscription where its provider can (it then grants nothing).

    :raises UserInputError: NOT_FOUND; NOT_SUPPORTED (the provider cannot pause);
        INVALID_STATE (not live); provider errors.
    """
    sub, provider = await _require(runtime, subscription_id)
    if not provider.supports(ProviderCapability.PAUSE):
        raise UserInputError("NOT_SUPPORTED", f"{provider.name} cannot pause subscriptions")
    if sub.status not in LIVE_STATUSES:
        raise UserInputError("INVALID_STATE", f"a {sub.status} subscription cannot be paused")
    snapshot = await _at_provider(provider, provider.pause_subscription(await _ref(runtime, sub)))
    if not _managed(provider):
        snapshot = None  # the engine owns push subscriptions' state

    def change(locked: Subscription, now: datetime) -> dict[str, object]:
        if locked.status not in LIVE_STATUSES:
            raise UserInputError("INVALID_STATE", f"the subscription is {locked.status}")
        return {"status": "PAUSED", "paused_at": now}

    return await _operate(runtime, sub, provider, snapshot, change)


# -- plan changes -----------------------------------------------------------------------------


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
    p: list[UserInputError] = []
    sub = await get_subscription(runtime.db.pool, subscription_id)
    if sub is None:
        raise UserInputError("NOT_FOUND", "no such subscription", ["subscriptionId"])
    provider = runtime.providers.get_configured(sub.provider)
    plans = await load_plans(runtime.db.pool, ids=[sub.plan_id])
    old = plans[0]
    found = await load_plans(runtime.db.pool, codes=[plan_code])
    new = found[0] if found else None
    if sub.status not in LIVE_STATUSES:
        p.append(
            UserInputError("INVALID_STATE", f"the subscription is {sub.status}", ["subscriptionId"])
        )
    if new is None:
        p.append(UserInputError("NOT_FOUND", f"no plan {plan_code!r}", ["planCode"]))
    elif new.archived:
        p.append(UserInputError("PLAN_ARCHIVED", f"plan {new.code!r} is archived", ["planCode"]))
    elif new.interval == "ONE_TIME":
        p.append(
            UserInputError(
                "INVALID_INPUT", "a subscription cannot move to a ONE_TIME plan", ["planCode"]
            )
        )
    elif new.id == old.id:
        p.append(
            UserInputError(
                "INVALID_INPUT", "the subscription is on this plan already", ["planCode"]
            )
        )
    elif new.price(sub.currency) is None:
        p.append(
            UserInputError(
                "UNSUPPORTED_CURRENCY",
                f"plan {new.code!r} has no price in {sub.currency}",
                ["planCode"],
            )
        )
    elif await holds_plan(runtime.db.pool, sub.customer_id, new.id):
        # One live subscription per customer and plan (``subscriptions_live_plan_key``).
        p.append(
            UserInputError(
                "ALREADY_SUBSCRIBED",
                f"the customer already has a live subscription to plan {new.code!r}",
                ["planCode"],
            )
        )
    if provider is None:
        p.append(
            UserInputError(
                "PROVIDER_NOT_CONFIGURED", f"provider {sub.provider!r} is not configured"
            )
        )
    elif new is not None and not p and _managed(provider):
        if not provider.supports(ProviderCapability.CHANGE_PLAN):
            p.append(UserInputError("NOT_SUPPORTED", f"{provider.name} cannot change plans"))
        elif (
            type(provider).needs_provider_ref
            and new.provider_ref(provider.name, sub.currency) is None
        ):
            p.append(
                UserInputError(
                    "PROVIDER_REF_MISSING",
                    f"plan {new.code!r} has no {provider.name} reference",
                    ["planCode"],
                )
            )
    if p:
        raise UserInputErrors(p)
    assert new is not None and provider is not None
    now = await runtime.clock.now()

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
    money = Money(amount, sub.currency) if amount is not None else None
    managed = _managed(provider)
    # NONE without a provider able to change plans now waits for the period end.
    deferred = (
        proration == ProrationBehavior.NONE
        and not managed
        and not provider.supports(ProviderCapability.CHANGE_PLAN)
        and end is not None
    )
    effective_at = end if deferred and end is not None else now
    restart = interval_change and not trialing and proration != ProrationBehavior.NONE
    if preview:
        return PlanChange(sub, money, effective_at)

    snapshot = None
    if managed:
        request = PlanChangeRequest(
            subscription=await _ref(runtime, sub),
            new_plan=plan_info(new, provider.name, sub.currency),
            proration=proration,
        )
        snapshot = await _at_provider(provider, provider.change_subscription_plan(request))
    answer = await _answer(runtime, provider, snapshot)
    events: list[DomainEvent] = []
    invoice_now = False
    async with runtime.db.transaction() as conn:
        locked = await get_subscription(conn, sub.id, lock=True)
        assert locked is not None
        if locked.status not in LIVE_STATUSES or locked.plan_id != sub.plan_id:
            raise UserInputError("INVALID_STATE", "the subscription changed meanwhile; retry")
        if not managed and await live_subscription(conn, sub.customer_id, new.id, besides=sub.id):
            # Bought meanwhile (the early check passed): one live subscription per plan.
            raise UserInputError(
                "ALREADY_SUBSCRIBED",
                f"the customer already has a live subscription to plan {new.code!r}",
                ["planCode"],
            )
        description = f"Proration: {old.code} -> {new.code}"
        if not managed:
            # The next period's renewal was priced at the old plan (and, on an interval
            # change, for a period that is gone): an open one is void, one paid ahead is
            # credited; the worker issues a fresh one at the new plan.
            await release_paid_renewal(conn, locked, now)
            events += await _close_push_checkouts(conn, sub.id, now, purpose="renewal")
        if answer is not None:
            events += await apply_operation_result(
                runtime, conn, provider.name, answer.snapshot, now, refreshed=answer.refreshed
            )
            after = await get_subscription(conn, sub.id)
            assert after is not None
            if after.plan_id != new.id:
                # The provider schedules it for the period end.
                effective_at = after.current_period_end or now
                await _update(
                    conn, after, now, pending_plan_id=new.id, pending_plan_at=effective_at
                )
        elif deferred:
            updated = await _update(
                conn, locked, now, pending_plan_id=new.id, pending_plan_at=effective_at
            )
            events.append(subscription_event("subscription.updated", updated, now))
        else:
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
            updated = await _update(conn, locked, now, **values)
            events.append(subscription_event("subscription.updated", updated, now))
        if amount:
            # Provider-managed: the provider bills it; kept for the record (already invoiced).
            await record_proration_item(
                conn,
                sub.id,
                description=description,
                currency=sub.currency,
                amount_minor=amount,
                invoiced_at=now if managed else None,
                now=now,
            )
            invoice_now = (
                not managed
                and amount > 0
                and (restart or proration == ProrationBehavior.ALWAYS_INVOICE)
            )
    result = await _finish(runtime, sub.id, events)
    if invoice_now:
        # The new period (or ALWAYS_INVOICE) is paid now, not at the next renewal.
        charged = await create_invoice_checkout(runtime, sub.id)
        if charged is not None and charged.error is not None:
            log.warning(
                "pending charges of %s: checkout failed (%s); the next renewal bills them",
                sub.id,
                charged.error.message,
            )
    return PlanChange(result, money, effective_at)


# -- portal -----------------------------------------------------------------------------------


async def create_portal_session(
    runtime: ServiceContext,
    customer_id: UUID | None,
    return_url: str | None,
    *,
    by_admin: bool = False,
) -> str:
    """A provider portal URL for the customer, at the provider of its latest subscription.

    :param by_admin: sent with an admin key, which decides which ``returnUrl`` is allowed
        (:meth:`~billing_gql.validation.Problems.redirect_url`).
    :raises UserInputError: NOT_FOUND (customer), INVALID_INPUT or REDIRECT_NOT_ALLOWED
        (returnUrl), NOT_SUPPORTED (no subscription, or its provider has no portal), provider
        errors.
    """
    customers = await load_customers(runtime.db.pool, ids=[customer_id]) if customer_id else []
    if not customers:
        raise UserInputError("NOT_FOUND", "no such customer", ["customerId"])
    problems = Problems()
    return_url = problems.redirect_url(
        return_url, "returnUrl", runtime.settings.outbound, admin=by_admin
    )
    problems.raise_if_any()
    name = await runtime.db.fetchval(
        "SELECT provider FROM subscriptions WHERE customer_id = $1 "
        "ORDER BY created_at DESC, id DESC LIMIT 1",
        customers[0].id,
    )
    if name is None:
        raise UserInputError("NOT_SUPPORTED", "the customer has no subscription to manage")
    provider = runtime.providers.get_configured(name)
    if provider is None:
        raise UserInputError("PROVIDER_NOT_CONFIGURED", f"provider {name!r} is not configured")
    if not provider.supports(ProviderCapability.PORTAL):
        raise UserInputError("NOT_SUPPORTED", f"{provider.name} has no customer portal")
    request = PortalRequest(
        customer=await customer_info(runtime.db.pool, customers[0], provider.name),
        return_url=return_url,
    )
    return await _call_provider(
        provider, provider.create_portal_session(request), "create a portal session"
    )
