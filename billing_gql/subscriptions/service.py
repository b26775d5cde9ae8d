"""Subscription operations: cancel, resume, pause, change plan (with proration), portal.

A provider-managed subscription (its provider ``charges_renewals``) is changed at the provider
through the plugin first; the snapshot it returns is applied like a webhook's. A push
subscription (manual, bank transfer) is the engine's own: it changes here, and a proration
becomes a pending ``invoice_items`` row billed by the next push checkout. Everything is
validated before anything is written or any provider is called; a provider error is a user
error and leaves our state untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from billing_gql.applier.engine import apply_operation_result
from billing_gql.context import ServiceContext
from billing_gql.core.events import subscription_event
from billing_gql.core.subscriptions import (
    ENDED_STATUSES,
    LIVE_STATUSES,
    Subscription,
    subscription_from_row,
)
from billing_gql.customers.service import load_customers
from billing_gql.errors import UserInputError
from billing_gql.money import shown
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import (
    DomainEvent,
    PortalRequest,
    ProviderCapability,
    SubscriptionSnapshot,
)
from billing_gql.routing import customer_info
from billing_gql.subscriptions.plan_change import PlanChange, change_plan, proration_minor
from billing_gql.subscriptions.steps import (
    at_provider,
    call_provider,
    close_push_checkouts,
    finish,
    get_subscription,
    is_managed,
    require_subscription,
    settle_answer,
    subscription_ref,
    update_row,
)
from billing_gql.validation import Problems

# The plan change lives in :mod:`.plan_change`; it stays reachable here with the other
# subscription operations.
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


# -- loading ----------------------------------------------------------------------------------


async def load_subscriptions(
    conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[UUID]
) -> list[Subscription]:
    """The subscriptions with these ids (in no particular order)."""
    rows = await conn.fetch("SELECT * FROM subscriptions WHERE id = ANY($1::uuid[])", list(ids))
    return [subscription_from_row(r) for r in rows]


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
    answer = await settle_answer(runtime, provider, snapshot)
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
            updated = await update_row(conn, locked, now, **change(locked, now))
            events.append(subscription_event("subscription.updated", updated, now))
        if ends_now:
            events += await close_push_checkouts(conn, sub.id, now)
    return await finish(runtime, sub.id, events)


# -- cancel, resume, pause --------------------------------------------------------------------


async def cancel_subscription(
    runtime: ServiceContext, subscription_id: UUID | None, *, at_period_end: bool = True
) -> Subscription:
    """Cancel at the period end (it stays live and entitled until then) or now (CANCELED).

    :raises UserInputError: NOT_FOUND; INVALID_STATE when already ended (or, at period end,
        not live); provider errors.
    """
    sub, provider = await require_subscription(runtime, subscription_id)
    if sub.status in ENDED_STATUSES:
        raise UserInputError("INVALID_STATE", f"the subscription is already {sub.status}")
    if at_period_end and sub.status not in LIVE_STATUSES:
        raise UserInputError(
            "INVALID_STATE", f"a {sub.status} subscription can only be canceled now"
        )
    snapshot = None
    if is_managed(provider):
        ref = await subscription_ref(runtime, sub)
        snapshot = await at_provider(
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


async def resume_subscription(
    runtime: ServiceContext, subscription_id: UUID | None, *, unpause: bool = True
) -> Subscription:
    """Undo a pending cancel, or resume a pause.

    :param unpause: whether a pause may be resumed (admins only: a pause is the operator's
        decision); without it only a pending cancel is undone, and a subscription paused
        meanwhile is ``INVALID_STATE``.
    :raises UserInputError: NOT_FOUND; INVALID_STATE when neither applies; provider errors.
    """
    sub, provider = await require_subscription(runtime, subscription_id)
    pending_cancel = sub.cancel_at_period_end and sub.status in LIVE_STATUSES
    if not pending_cancel and (sub.status != "PAUSED" or not unpause):
        raise UserInputError(
            "INVALID_STATE", "only a pending cancel or a paused subscription can be resumed"
        )
    snapshot = None
    if is_managed(provider):
        snapshot = await at_provider(
            provider, provider.resume_subscription(await subscription_ref(runtime, sub))
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
    sub, provider = await require_subscription(runtime, subscription_id)
    if not provider.supports(ProviderCapability.PAUSE):
        raise UserInputError("NOT_SUPPORTED", f"{provider.name} cannot pause subscriptions")
    if sub.status not in LIVE_STATUSES:
        raise UserInputError("INVALID_STATE", f"a {sub.status} subscription cannot be paused")
    snapshot = await at_provider(
        provider, provider.pause_subscription(await subscription_ref(runtime, sub))
    )
    if not is_managed(provider):
        snapshot = None  # the engine owns push subscriptions' state

    def change(locked: Subscription, now: datetime) -> dict[str, object]:
        if locked.status not in LIVE_STATUSES:
            raise UserInputError("INVALID_STATE", f"the subscription is {locked.status}")
        return {"status": "PAUSED", "paused_at": now}

    return await _operate(runtime, sub, provider, snapshot, change)


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
        raise UserInputError("PROVIDER_NOT_CONFIGURED", f"provider {shown(name)} is not configured")
    if not provider.supports(ProviderCapability.PORTAL):
        raise UserInputError("NOT_SUPPORTED", f"{provider.name} has no customer portal")
    request = PortalRequest(
        customer=await customer_info(runtime.db.pool, customers[0], provider.name),
        return_url=return_url,
    )
    return await call_provider(
        provider, provider.create_portal_session(request), "create a portal session"
    )
