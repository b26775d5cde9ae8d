"""The steps the subscription operations share (:mod:`.service`, :mod:`.plan_change`): find
the subscription and its provider, call the provider (a failure is a user error), settle its
answer before the transaction, write our row, expire what is no longer owed, emit once
committed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import asyncpg

from billing_gql.applier.refresh import refresh_snapshot, subscription_refs
from billing_gql.context import ServiceContext
from billing_gql.core.checkout import checkout_from_row
from billing_gql.core.events import checkout_event
from billing_gql.core.subscriptions import Subscription, subscription_from_row
from billing_gql.errors import UserInputError
from billing_gql.money import shown
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import DomainEvent, SubscriptionRef, SubscriptionSnapshot
from billing_gql.routing import error_text, log_failure, redact
from billing_gql.store.checkouts_sql import expire_open_push_checkouts
from billing_gql.store.subscriptions_sql import update_subscription

__all__ = [
    "Answer",
    "at_provider",
    "call_provider",
    "close_push_checkouts",
    "finish",
    "get_subscription",
    "is_managed",
    "require_subscription",
    "settle_answer",
    "subscription_ref",
    "update_row",
]

# The service's logger: its lines keep their logger name.
log = logging.getLogger("billing_gql.subscriptions.service")

_T = TypeVar("_T")


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


async def require_subscription(
    runtime: ServiceContext, subscription_id: UUID | None
) -> tuple[Subscription, Provider]:
    sub = await get_subscription(runtime.db.pool, subscription_id)
    if sub is None:
        raise UserInputError("NOT_FOUND", "no such subscription", ["subscriptionId"])
    provider = runtime.providers.get_configured(sub.provider)
    if provider is None:
        raise UserInputError(
            "PROVIDER_NOT_CONFIGURED", f"provider {shown(sub.provider)} is not configured"
        )
    return sub, provider


def is_managed(provider: Provider) -> bool:
    """The provider runs this subscription (renews it itself): change it there first."""
    return type(provider).charges_renewals


async def subscription_ref(runtime: ServiceContext, sub: Subscription) -> SubscriptionRef:
    [ref] = await subscription_refs(runtime.db.pool, [sub])
    return ref


async def call_provider(provider: Provider, call: Awaitable[_T], doing: str) -> _T:
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


async def at_provider(
    provider: Provider, call: Awaitable[SubscriptionSnapshot | None]
) -> SubscriptionSnapshot | None:
    """A subscription operation at the provider: the state it answered with, if any."""
    result = await call_provider(provider, call, "run a subscription operation")
    return result if isinstance(result, SubscriptionSnapshot) else None


@dataclass(frozen=True)
class Answer:
    """What a provider operation answered, ready to apply (re-fetched when not newer)."""

    snapshot: SubscriptionSnapshot
    refreshed: dict[str, datetime]


async def settle_answer(
    runtime: ServiceContext, provider: Provider, snapshot: SubscriptionSnapshot | None
) -> Answer | None:
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
        return Answer(snapshot, {})
    return Answer(settled, refreshed)


async def update_row(
    conn: asyncpg.Connection, sub: Subscription, now: datetime, **values: object
) -> Subscription:
    return subscription_from_row(await update_subscription(conn, sub.id, now, values))


async def close_push_checkouts(
    conn: asyncpg.Connection, subscription_id: UUID, now: datetime, *, purpose: str | None = None
) -> list[DomainEvent]:
    """An ended subscription's open renewal/charges checkouts (or those of ``purpose``)
    expire: nothing more is owed for them."""
    rows = await expire_open_push_checkouts(conn, subscription_id, now, purpose)
    return [checkout_event("checkout.expired", checkout_from_row(r), now) for r in rows]


async def finish(runtime: ServiceContext, sub_id: UUID, events: list[DomainEvent]) -> Subscription:
    """Emit the committed change's events; the subscription as it now is."""
    for event in events:
        await runtime.emit(event)
    found = await get_subscription(runtime.db.pool, sub_id)
    assert found is not None
    return found
