"""The billing engine: applies normalized :class:`~billing_gql.plugins.types.BillingEvent` facts
to checkouts, payments, subscriptions and provider grants.

Every caller (provider webhooks, ``completeManualCheckout``, ``assignPayment``, reconciliation,
zero-amount push checkouts) goes through :func:`apply_events` inside ONE transaction, and emits
the returned domain events only after that transaction committed.

Rules that keep it idempotent and order-independent:

- rows are locked in one order — checkout, then subscription, then payment — so concurrent
  deliveries about one purchase serialize instead of deadlocking;
- uniqueness lives in constraints: one payment per (provider, provider_ref), one subscription
  per originating checkout (``origin_checkout_id``), one per (provider, provider subscription
  id), one grant per (provider, grant id);
- one ordering check (``SubscriptionApplier.admits``) guards every write of provider state: a
  snapshot is applied when its version (``SubscriptionSnapshot.updated_at``, else the event's
  ``occurred_at``) is strictly newer than the newest one applied (``provider_updated_at``),
  or when it was re-fetched from the provider after that one (see
  :mod:`billing_gql.applier.refresh`); a snapshot without a version (the answer to one
  of our operations, from a provider that gives no time) is applied without advancing it;
- a provider reaches only its own checkouts and subscriptions;
- a completion completes only the checkout it is bound to: the provider session we stored for
  it, paying what it owes in its currency (``CheckoutApplier.completion_mismatch``); our ids in a
  provider payload are hints, never proof. Anything else is kept as an ``unmatched`` payment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from billing_gql.applier.base import (
    LIVE_FOR_PLAN,
    AlreadySubscribed,
    ApplyError,
    enter_period,
    initial_period,
    live_subscription,
    lock_checkout_row,
    next_period,
)
from billing_gql.applier.grants import GrantApplier
from billing_gql.applier.payments import PaymentApplier
from billing_gql.applier.refresh import (
    Refreshed,
    refresh_events,
)
from billing_gql.context import ServiceContext
from billing_gql.core.checkout import Checkout, checkout_from_row
from billing_gql.core.payments import payment_from_row
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.money import shown
from billing_gql.plugins.types import (
    BillingEvent,
    DomainEvent,
    EventKind,
    SubscriptionSnapshot,
)

__all__ = [
    "LIVE_FOR_PLAN",
    "AlreadySubscribed",
    "ApplyError",
    "apply_billing_events",
    "apply_events",
    "apply_operation_result",
    "enter_period",
    "initial_period",
    "live_subscription",
    "next_period",
]

log = logging.getLogger(__name__)


class _Applier(PaymentApplier, GrantApplier):
    """Dispatches each kind of event to the module that applies it."""

    async def run(self, event: BillingEvent) -> None:
        handlers = {
            EventKind.CHECKOUT_COMPLETED: self.checkout_completed,
            EventKind.CHECKOUT_EXPIRED: self.checkout_closed,
            EventKind.CHECKOUT_FAILED: self.checkout_closed,
            EventKind.SUBSCRIPTION_UPDATED: self.subscription_updated,
            EventKind.PAYMENT_SUCCEEDED: self.payment_succeeded,
            EventKind.PAYMENT_FAILED: self.payment_failed,
            EventKind.PAYMENT_RECEIVED: self.payment_received,
            EventKind.REFUND_SUCCEEDED: self.refund_succeeded,
            EventKind.REFUND_FAILED: self.refund_failed,
            EventKind.DISPUTE_UPDATED: self.dispute_updated,
            EventKind.GRANT_UPDATED: self.grant_updated,
            EventKind.INVOICE_UPDATED: self.invoice_updated,
        }
        handler = handlers.get(EventKind(event.kind))
        if handler is None:  # pragma: no cover - EventKind is closed
            raise ApplyError(f"unknown event kind {shown(event.kind)}")
        await handler(event)

    # -- lookups (each locks what it returns) ---------------------------------------------------


async def apply_events(
    runtime: ServiceContext,
    conn: asyncpg.Connection,
    provider: str,
    events: Sequence[BillingEvent],
    now: datetime,
    *,
    refreshed: Refreshed | None = None,
) -> list[DomainEvent]:
    """Apply ``events`` from ``provider`` on ``conn`` (inside the caller's transaction).

    :param refreshed: what :func:`~billing_gql.applier.refresh.refresh_events` returned
        for these events (run it before opening the transaction).
    :returns: the domain events to emit once the transaction has committed.
    :raises ApplyError: an event cannot be applied (yet); roll back and retry later.
    """
    applier = _Applier(runtime, conn, provider, now, refreshed)
    for event in events:
        await applier.run(event)
    return applier.out


async def apply_billing_events(
    runtime: ServiceContext, provider: str, events: Sequence[BillingEvent]
) -> list[DomainEvent]:
    """Apply ``events`` in one transaction (after re-fetching snapshots that are not newer
    than what we hold), then emit their domain events."""
    instance = runtime.providers.get_configured(provider)
    refreshed: dict[str, datetime] = {}
    if instance is not None:
        events, refreshed = await refresh_events(runtime, instance, events)
    now = await runtime.clock.now()
    async with runtime.db.transaction() as conn:
        out = await apply_events(runtime, conn, provider, events, now, refreshed=refreshed)
    for event in out:
        await runtime.emit(event)
    return out


async def apply_operation_result(
    runtime: ServiceContext,
    conn: asyncpg.Connection,
    provider: str,
    snapshot: SubscriptionSnapshot,
    now: datetime,
    *,
    refreshed: Refreshed | None = None,
) -> list[DomainEvent]:
    """Apply the state one of our subscription operations (cancel, resume, pause, change plan)
    answered with, inside the caller's transaction.

    Its version is the provider's time of that state (``snapshot.updated_at``), so the
    provider's own later deliveries about the change apply, and older ones still in flight do
    not; without one the state is applied and the version stays where it was. A tie that
    could not be settled is left to the provider's delivery (no error).
    """
    applier = _Applier(runtime, conn, provider, now, refreshed)
    applier.retry_unsettled = False
    await applier.apply_snapshot(snapshot, snapshot.updated_at)
    return applier.out


async def assign_payment(
    runtime: ServiceContext, payment_id: UUID | None, checkout_id: UUID | None
) -> tuple[Checkout, list[DomainEvent]]:
    """Apply an unmatched payment to a checkout as if it had matched (admin repair).

    :raises UserInputError: NOT_FOUND (either id, also ``None``: not a valid id),
        INVALID_STATE (the payment is matched already, or came through another provider),
        INVALID_CURRENCY (currencies differ).
    """
    now = await runtime.clock.now()
    async with runtime.db.transaction() as conn:
        crow = await lock_checkout_row(conn, "id = $1", checkout_id)
        prow = await conn.fetchrow("SELECT * FROM payments WHERE id = $1 FOR UPDATE", payment_id)
        problems = []
        if prow is None:
            problems.append(UserInputError("NOT_FOUND", "no such payment", ["paymentId"]))
        if crow is None:
            problems.append(UserInputError("NOT_FOUND", "no such checkout", ["checkoutId"]))
        if problems:
            raise UserInputErrors(problems)
        assert prow is not None and crow is not None
        payment, checkout = payment_from_row(prow), checkout_from_row(crow)
        if payment.status != "unmatched":
            raise UserInputError(
                "INVALID_STATE", f"the payment is {payment.status}, not unmatched", ["paymentId"]
            )
        if payment.currency != checkout.currency:
            raise UserInputError(
                "INVALID_CURRENCY",
                f"the payment is in {payment.currency}, the checkout in {checkout.currency}",
                ["checkoutId"],
            )
        if payment.provider != checkout.provider:
            raise UserInputError(
                "INVALID_STATE",
                f"the payment came through {payment.provider}, the checkout is {checkout.provider}",
                ["checkoutId"],
            )
        applier = _Applier(runtime, conn, checkout.provider, now)
        await applier.assign(payment.id, checkout)
        done = await conn.fetchrow("SELECT * FROM checkouts WHERE id = $1", checkout.id)
    for event in applier.out:
        await runtime.emit(event)
    return checkout_from_row(done), applier.out
