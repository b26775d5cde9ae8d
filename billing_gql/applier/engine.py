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
- one ordering check (:meth:`_Applier.admits`) guards every write of provider state: a
  snapshot is applied when its version (``SubscriptionSnapshot.updated_at``, else the event's
  ``occurred_at``) is strictly newer than the newest one applied (``provider_updated_at``),
  or when it was re-fetched from the provider after that one (see
  :mod:`billing_gql.applier.refresh`); a snapshot without a version (the answer to one
  of our operations, from a provider that gives no time) is applied without advancing it;
- a provider reaches only its own checkouts and subscriptions;
- a completion completes only the checkout it is bound to: the provider session we stored for
  it, paying what it owes in its currency (:meth:`_Applier.completion_mismatch`); our ids in a
  provider payload are hints, never proof. Anything else is kept as an ``unmatched`` payment.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.applier.refresh import (
    Refreshed,
    can_fetch,
    refresh_events,
    version_of,
)
from billing_gql.catalog.service import load_plans
from billing_gql.context import ServiceContext
from billing_gql.core import checkout as cm
from billing_gql.core.catalog import Plan
from billing_gql.core.checkout import Checkout, checkout_from_row
from billing_gql.core.events import checkout_event, payment_event, subscription_event
from billing_gql.core.payments import Payment, payment_from_row
from billing_gql.core.periods import next_period_end
from billing_gql.core.subscriptions import Subscription, subscription_from_row
from billing_gql.customers.service import parse_uuid
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.money import Money, check_amount
from billing_gql.plugins.types import (
    BillingEvent,
    DomainEvent,
    EventKind,
    FeatureGrant,
    PaymentInfo,
    SubscriptionSnapshot,
)
from billing_gql.store.customers import remember_provider_customer
from billing_gql.store.subscriptions import RENEWAL_PAID_TWICE, carry_credit

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
    row = await conn.fetchrow(
        "UPDATE subscriptions SET status = 'ACTIVE', plan_id = $2, "
        "pending_plan_id = CASE WHEN pending_plan_id = $2 THEN NULL ELSE pending_plan_id END, "
        "pending_plan_at = CASE WHEN pending_plan_id = $2 THEN NULL ELSE pending_plan_at END, "
        "current_period_start = $3, current_period_end = $4, billing_anchor = $5, "
        "ended_at = NULL, updated_at = $6 WHERE id = $1 RETURNING *",
        sub.id,
        plan.id,
        start,
        end,
        anchor,
        now,
    )
    return subscription_from_row(row)


class AlreadySubscribed(Exception):
    """A subscription would be a second live one of its customer to its plan."""

    def __init__(self, existing: Subscription) -> None:
        super().__init__(f"customer already has live subscription {existing.id} to this plan")
        self.existing = existing


class _Applier:
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
            EventKind.GRANT_UPDATED: self.grant_updated,
        }
        handler = handlers.get(EventKind(event.kind))
        if handler is None:  # pragma: no cover - EventKind is closed
            raise ApplyError(f"unknown event kind {event.kind!r}")
        await handler(event)

    # -- lookups (each locks what it returns) ---------------------------------------------------

    async def lock_checkout(
        self, checkout_id: str | None, provider_checkout_id: str | None
    ) -> Checkout | None:
        uid = parse_uuid(checkout_id)
        if uid is None and provider_checkout_id is None:
            return None
        row = await self.conn.fetchrow(
            "SELECT * FROM checkouts WHERE provider = $1 AND (id = $2 OR "
            "($3::text IS NOT NULL AND provider_checkout_id = $3)) "
            "ORDER BY (id = $2) DESC LIMIT 1 FOR UPDATE",
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
        row = await self.conn.fetchrow(
            "INSERT INTO payments (provider, provider_ref, status, amount_minor, refunded_minor, "
            "currency, checkout_id, customer_id, subscription_id, reference, details, "
            "received_at, created_at) VALUES ($1,$2,$3,$4,0,$5,$6,$7,$8,$9,$10,$11,$12) "
            "ON CONFLICT (provider, provider_ref) DO NOTHING RETURNING *",
            self.provider,
            provider_ref or info.provider_ref,
            status,
            info.amount.minor,
            info.amount.currency,
            checkout.id if checkout else None,
            customer_id,
            subscription_id,
            info.reference,
            dict(info.details) or None,
            info.received_at or occurred_at,
            self.now,
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
        row = await self.conn.fetchrow(
            "UPDATE checkouts SET amount_paid_minor = amount_paid_minor + $2, updated_at = $3 "
            "WHERE id = $1 RETURNING *",
            checkout.id,
            amount_minor,
            self.now,
        )
        return checkout_from_row(row)

    async def take_payment(self, checkout: Checkout, payment: Payment) -> None:
        """Money matched to ``checkout``: add it, and complete the checkout once paid in full
        (also an EXPIRED or FAILED one: the money arrived). Overpayments are kept as paid."""
        checkout = await self.add_paid(checkout, payment.amount_minor)
        if checkout.status != cm.COMPLETED and checkout.amount_paid_minor >= checkout.amount_minor:
            await self.complete(checkout, None, None)
        else:
            self.out.append(checkout_event("checkout.updated", checkout, self.now))

    # -- checkouts ------------------------------------------------------------------------------

    async def checkout_completed(self, ev: BillingEvent) -> None:
        checkout = await self.lock_checkout(ev.checkout_id, ev.provider_checkout_id)
        if checkout is None and ev.subscription is not None:
            checkout = await self.lock_checkout(ev.subscription.checkout_id, None)
        if checkout is None:
            raise ApplyError(
                f"checkout.completed names no known {self.provider} checkout "
                f"({ev.checkout_id or ev.provider_checkout_id})"
            )
        reason = await self.completion_mismatch(checkout, ev)
        if reason is not None:
            await self.keep_mismatched(checkout, ev, reason)
            return
        pcid = (
            ev.provider_customer_id
            or (ev.subscription.provider_customer_id if ev.subscription else None)
            or (ev.payment.provider_customer_id if ev.payment else None)
        )
        await self.learn_customer(checkout.customer_id, pcid)
        if ev.provider_checkout_id and checkout.provider_checkout_id is None:
            await self.conn.execute(
                "UPDATE checkouts SET provider_checkout_id = $2 WHERE id = $1",
                checkout.id,
                ev.provider_checkout_id,
            )
        if ev.payment is not None:
            payment = await self.insert_payment(
                ev.payment,
                ev.occurred_at,
                status="succeeded",
                checkout=checkout,
                customer_id=checkout.customer_id,
                subscription_id=checkout.subscription_id,
            )
            if payment is not None:
                self.out.append(payment_event("payment.succeeded", payment, self.now))
                checkout = await self.add_paid(checkout, payment.amount_minor)
        snapshot = ev.subscription
        version = version_of(snapshot, ev.occurred_at) if snapshot is not None else None
        await self.complete(checkout, snapshot, version)

    # The reasons a completion does not complete the checkout it names
    # (``Payment.unmatchedReason``, ``payment.unmatched`` events).
    OTHER_PROVIDER_CHECKOUT = "PROVIDER_CHECKOUT_MISMATCH"
    OTHER_CURRENCY = "CURRENCY_MISMATCH"
    AMOUNT_MISSING = "AMOUNT_MISSING"
    AMOUNT_TOO_LOW = "AMOUNT_TOO_LOW"

    def binds(self, checkout: Checkout, provider_checkout_id: str | None) -> bool:
        """Whether a fact about the provider session ``provider_checkout_id`` is about the
        session we created for ``checkout``. Our ``checkout_id`` in a payload is only a hint
        (a buyer can attach it to a session of their own, e.g. Stripe's
        ``client_reference_id`` on a Payment Link); the id the provider answered
        ``create_checkout`` with is not. A checkout that has none (a provider that gives no
        id) binds on the amount alone."""
        stored = checkout.provider_checkout_id
        return stored is None or provider_checkout_id == stored

    def owed_at_completion(self, checkout: Checkout) -> int:
        """Minor units a completion must cover: the checkout's whole amount (what its provider
        session was created for; money counted already does not lower it, as it may be this
        very payment, delivered apart first), or nothing for a first purchase that starts a
        trial (its renewal, or the provider's first invoice after the trial, collects the
        price). The trial is the checkout's own (``Checkout.trial_days``: 0 for a customer who
        had the plan's trial before), not the plan's."""
        if checkout.purpose == cm.NEW and checkout.trial_days > 0:
            return 0
        return checkout.amount_minor

    async def completion_mismatch(self, checkout: Checkout, ev: BillingEvent) -> str | None:
        """Why ``ev`` cannot complete ``checkout`` (``None``: it can). It must be about the
        provider session we stored (:meth:`binds`), and what the provider charged
        (``ev.amount``, else ``ev.payment.amount``) must be in the checkout's currency and
        cover what is owed (:meth:`owed_at_completion`; more is fine: tax on top)."""
        if not self.binds(checkout, ev.provider_checkout_id):
            return self.OTHER_PROVIDER_CHECKOUT
        paid = ev.amount if ev.amount is not None else (ev.payment.amount if ev.payment else None)
        if paid is not None and paid.currency != checkout.currency:
            return self.OTHER_CURRENCY
        owed = self.owed_at_completion(checkout)
        if owed > 0 and paid is None:
            return self.AMOUNT_MISSING
        if paid is not None and paid.minor < owed:
            return self.AMOUNT_TOO_LOW
        return None

    async def keep_mismatched(self, checkout: Checkout, ev: BillingEvent, reason: str) -> None:
        """A completion that names ``checkout`` but does not match it: nothing of it applies
        (no completion, no subscription, no customer learnt); its money is kept as an
        ``unmatched`` payment for an operator (``unmatchedPayments``, ``assignPayment``),
        announced by ``payment.unmatched``, and the checkout stays as it was."""
        info = ev.payment
        if info is None:
            # A completion without a payment of its own (the money, if any, comes in another
            # event): kept under the session's id, or once per checkout when it gives none.
            info = PaymentInfo(
                provider_ref=ev.provider_checkout_id or f"completion-of-{checkout.id}",
                amount=ev.amount or Money(0, checkout.currency),
                provider_checkout_id=ev.provider_checkout_id,
                provider_customer_id=ev.provider_customer_id,
                received_at=ev.occurred_at,
            )
        details = {
            **info.details,
            "unmatched_reason": reason,
            "claimed_checkout_id": str(checkout.id),
            "provider_checkout_id": ev.provider_checkout_id,
        }
        log.warning(
            "%s completion of checkout %s (session %s, %s) does not match it (%s): kept as an "
            "unmatched payment; the checkout stays %s",
            self.provider,
            checkout.id,
            ev.provider_checkout_id,
            ev.amount or info.amount,
            reason,
            checkout.status,
        )
        payment = await self.insert_payment(
            replace(info, details=details),
            ev.occurred_at,
            status="unmatched",
            checkout=None,
            customer_id=None,
            subscription_id=None,
        )
        if payment is not None:
            self.out.append(payment_event("payment.unmatched", payment, self.now))

    async def complete(
        self,
        checkout: Checkout,
        snapshot: SubscriptionSnapshot | None,
        version: datetime | None,
    ) -> Checkout:
        """Complete ``checkout`` (locked): create, renew or settle its subscription.
        ``version`` orders ``snapshot`` (see :meth:`admits`)."""
        if checkout.status == cm.COMPLETED:
            if snapshot is not None:
                await self.apply_snapshot(snapshot, version, checkout=checkout)
            return checkout
        sub_id = checkout.subscription_id
        if checkout.purpose == cm.NEW:
            plan = await self.plan(checkout.plan_id)
            if plan.interval != "ONE_TIME":
                try:
                    sub = await self.subscription_for(checkout, plan, snapshot, version)
                except AlreadySubscribed as exc:
                    await self.already_subscribed(checkout, exc.existing)
                    sub = exc.existing
                sub_id = sub.id
        elif checkout.purpose == cm.RENEWAL and sub_id is not None:
            await self.renew(sub_id, checkout)
        if checkout.purpose != cm.NEW and sub_id is not None:
            await self.settle_items(checkout, sub_id)
        row = await self.conn.fetchrow(
            "UPDATE checkouts SET status = 'COMPLETED', completed_at = $2, updated_at = $2, "
            "subscription_id = $3 WHERE id = $1 RETURNING *",
            checkout.id,
            self.now,
            sub_id,
        )
        done = checkout_from_row(row)
        self.out.append(checkout_event("checkout.completed", done, self.now))
        return done

    async def settle_items(self, checkout: Checkout, subscription_id: UUID) -> None:
        """The invoice items ``checkout`` carried are billed by it, and by no other checkout.

        An expired (or failed) push checkout releases its items to the next one; money may
        still complete it (a late bank transfer). Then each item it carried:

        - still pending and held by it, or by another checkout that is not open: billed here;
        - moved to a newer OPEN checkout: billed here, and that checkout's amount drops by it
          (same reference: the bank transfer asks for what remains; at or below what it has
          received, it completes; below zero, the rest is a credit carried forward);
        - already billed by another completed checkout: the customer paid it twice, so its
          amount comes back as a pending credit for the next push checkout.
        """

        cid = checkout.id
        holders = await self.conn.fetch(
            "SELECT * FROM checkouts WHERE status = 'OPEN' AND id <> $1 AND id IN ("
            "SELECT checkout_id FROM invoice_items WHERE subscription_id = $2 "
            "AND invoiced_at IS NULL AND $1 = ANY(carried_by)) ORDER BY id FOR UPDATE",
            cid,
            subscription_id,
        )
        open_holders = {r["id"]: checkout_from_row(r) for r in holders}
        items = await self.conn.fetch(
            "SELECT id, amount_minor, checkout_id, invoiced_at, currency FROM invoice_items "
            "WHERE subscription_id = $2 AND (checkout_id = $1 OR $1 = ANY(carried_by)) "
            "ORDER BY created_at, id FOR UPDATE",
            cid,
            subscription_id,
        )
        take: list[UUID] = []
        taken_from: dict[UUID, int] = {}
        twice = 0
        currency = checkout.currency
        for item in items:
            if item["invoiced_at"] is not None:
                if item["checkout_id"] != cid:
                    twice += item["amount_minor"]
                continue
            take.append(item["id"])
            holder = item["checkout_id"]
            if holder != cid and holder in open_holders:
                taken_from[holder] = taken_from.get(holder, 0) + item["amount_minor"]
        # An open checkout it is taken from no longer carries it (its amount drops below), so
        # completing that one later does not count it as paid twice. (SET sees the old row.)
        await self.conn.execute(
            "UPDATE invoice_items SET invoiced_at = $2, checkout_id = $1, carried_by = CASE "
            "WHEN checkout_id = ANY($4::uuid[]) THEN array_remove(carried_by, checkout_id) "
            "ELSE carried_by END WHERE id = ANY($3::uuid[])",
            cid,
            self.now,
            take,
            list(open_holders),
        )
        if twice:
            log.warning(
                "checkout %s completed late: items billed by another checkout were paid twice; "
                "crediting %s minor units",
                cid,
                twice,
            )
            await carry_credit(
                self.conn,
                subscription_id,
                currency,
                -twice,
                self.now,
                description="Credit: charges paid twice (a late payment of an expired checkout)",
            )
        for holder_id, amount in taken_from.items():
            await self.reduce_open_checkout(open_holders[holder_id], amount, subscription_id)

    async def reduce_open_checkout(
        self, checkout: Checkout, by_minor: int, subscription_id: UUID
    ) -> None:
        """Items worth ``by_minor`` were billed by another checkout: ``checkout`` (OPEN, locked)
        no longer asks for them."""

        amount = checkout.amount_minor - by_minor
        if amount < 0:
            await carry_credit(self.conn, subscription_id, checkout.currency, amount, self.now)
            amount = 0
        row = await self.conn.fetchrow(
            "UPDATE checkouts SET amount_minor = $2, updated_at = $3 WHERE id = $1 RETURNING *",
            checkout.id,
            amount,
            self.now,
        )
        updated = checkout_from_row(row)
        log.info(
            "checkout %s: %s minor units of its items were paid by a late checkout; it now "
            "asks for %s",
            checkout.id,
            by_minor,
            amount,
        )
        if updated.amount_paid_minor >= updated.amount_minor:
            await self.complete(updated, None, None)
        else:
            self.out.append(checkout_event("checkout.updated", updated, self.now))

    async def checkout_closed(self, ev: BillingEvent) -> None:
        checkout = await self.lock_checkout(ev.checkout_id, ev.provider_checkout_id)
        if checkout is None:
            log.info("%s %s for an unknown checkout: ignored", self.provider, ev.kind)
            return
        if not self.binds(checkout, ev.provider_checkout_id):
            log.warning(
                "%s %s of session %s names checkout %s, whose session is %s: ignored",
                self.provider,
                ev.kind,
                ev.provider_checkout_id,
                checkout.id,
                checkout.provider_checkout_id,
            )
            return
        if checkout.status != cm.OPEN:
            return
        status = cm.EXPIRED if ev.kind == EventKind.CHECKOUT_EXPIRED else cm.FAILED
        row = await self.conn.fetchrow(
            "UPDATE checkouts SET status = $2, updated_at = $3 WHERE id = $1 RETURNING *",
            checkout.id,
            status,
            self.now,
        )
        kind = "checkout.expired" if status == cm.EXPIRED else "checkout.failed"
        self.out.append(checkout_event(kind, checkout_from_row(row), self.now))

    # -- subscriptions --------------------------------------------------------------------------

    async def subscription_for(
        self,
        checkout: Checkout,
        plan: Plan,
        snapshot: SubscriptionSnapshot | None,
        version: datetime | None,
    ) -> Subscription:
        """The subscription a completed new-purchase checkout made (created once)."""
        sub = await self.lock_subscription(
            provider_subscription_id=snapshot.provider_subscription_id if snapshot else None,
            origin_checkout_id=checkout.id,
        )
        if sub is not None:
            if sub.origin_checkout_id is None:
                await self.conn.execute(
                    "UPDATE subscriptions SET origin_checkout_id = $2 WHERE id = $1",
                    sub.id,
                    checkout.id,
                )
            # The completion may carry an older state than one applied already (the
            # subscription's own delivery came first): the same ordering check as any snapshot.
            if snapshot is not None and self.admits(sub, snapshot, version):
                sub = await self.update_from_snapshot(sub, snapshot, version)
            return sub
        if snapshot is not None:
            mapped = await self.plan_id_for_ref(snapshot.plan_ref, snapshot.currency)
            if mapped is not None and mapped != plan.id:
                plan = await self.plan(mapped)
        return await self.insert_subscription(
            customer_id=checkout.customer_id,
            plan=plan,
            currency=checkout.currency,
            quantity=checkout.quantity,
            origin_checkout_id=checkout.id,
            snapshot=snapshot,
            version=version,
            trial_days=checkout.trial_days,
        )

    async def already_subscribed(self, checkout: Checkout, existing: Subscription) -> None:
        """``checkout`` (a new purchase, locked) completed while its customer already had a
        live subscription to the plan (it was created before that one completed): no second
        subscription. What it was paid is never lost: it stays recorded as the checkout's
        payment, and comes back as a credit on the live subscription (the next push renewal
        deducts it; a provider-managed one keeps it for the record) when the currencies
        match. The checkout is flagged ``ALREADY_SUBSCRIBED`` for the operator (to refund)."""

        paid = checkout.amount_paid_minor - checkout.refunded_minor
        credited = paid > 0 and existing.currency == checkout.currency
        if credited:
            await carry_credit(
                self.conn,
                existing.id,
                checkout.currency,
                -paid,
                self.now,
                description=f"Credit: checkout {checkout.id} paid for a plan already subscribed",
            )
        log.warning(
            "checkout %s completed while subscription %s to its plan is live: no second "
            "subscription; %s minor units paid%s",
            checkout.id,
            existing.id,
            paid,
            " and credited to it" if credited else "",
        )
        await self.conn.execute(
            "UPDATE checkouts SET error_code = 'ALREADY_SUBSCRIBED', error = $2 WHERE id = $1",
            checkout.id,
            "the customer already had a live subscription to this plan"
            + (f"; the {paid} minor units paid were credited to it" if credited else "")
            + (
                f"; {paid} minor units paid are to be refunded" if paid > 0 and not credited else ""
            ),
        )

    async def insert_subscription(
        self,
        *,
        customer_id: UUID,
        plan: Plan,
        currency: str,
        quantity: int,
        origin_checkout_id: UUID | None,
        snapshot: SubscriptionSnapshot | None,
        version: datetime | None,
        trial_days: int = 0,
    ) -> Subscription:
        """Create a subscription (once per origin checkout and provider subscription id).

        :raises AlreadySubscribed: it would be a second live one of the customer to ``plan``
            (the unique index ``subscriptions_live_plan_key`` decides, also between
            concurrent transactions).
        """
        status, start, end, trial_end, anchor = initial_period(plan, self.now, trial_days)
        values: dict[str, Any] = {
            "customer_id": customer_id,
            "plan_id": plan.id,
            "provider": self.provider,
            "provider_subscription_id": None,
            "status": status,
            "currency": currency,
            "quantity": quantity,
            "current_period_start": start,
            "current_period_end": end,
            "trial_end": trial_end,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "ended_at": None,
            "origin_checkout_id": origin_checkout_id,
            "provider_updated_at": None,
            "billing_anchor": anchor,
            "created_at": self.now,
            "updated_at": self.now,
        }
        if snapshot is not None:
            snap_values = _snapshot_values(snapshot)
            for name in ("current_period_start", "current_period_end", "currency"):
                if snap_values[name] is None:
                    snap_values.pop(name)
            values.update(snap_values)
            values["provider_updated_at"] = version
            values["billing_anchor"] = values["current_period_start"]
        columns = list(values)
        row = await self.conn.fetchrow(
            f"INSERT INTO subscriptions ({', '.join(columns)}) "  # noqa: S608
            f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))}) "
            "ON CONFLICT DO NOTHING RETURNING *",
            *values.values(),
        )
        if row is None:
            # A concurrent transaction created it first (the unique keys decided).
            found = await self.lock_subscription(
                provider_subscription_id=values["provider_subscription_id"],
                origin_checkout_id=origin_checkout_id,
            )
            if found is None:
                live = await live_subscription(self.conn, customer_id, plan.id)
                if live is not None and values["status"] in LIVE_FOR_PLAN:
                    raise AlreadySubscribed(live)
                raise ApplyError("the subscription could not be created nor found")
            return found
        sub = subscription_from_row(row)
        if sub.trial_end is not None:
            # The customer's one trial of this plan (taken already when a bank-transfer
            # checkout claimed it before completing at once).
            await self.conn.execute(
                "INSERT INTO trial_redemptions (customer_id, plan_id, subscription_id, "
                "created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id, plan_id) DO "
                "UPDATE SET subscription_id = COALESCE(trial_redemptions.subscription_id, "
                "EXCLUDED.subscription_id)",
                sub.customer_id,
                sub.plan_id,
                sub.id,
                self.now,
            )
        self.out.append(subscription_event("subscription.created", sub, self.now))
        return sub

    async def renew(self, subscription_id: UUID, checkout: Checkout) -> None:
        """A paid push renewal buys the period after the one it was issued in (which ends at
        ``checkout.renews_from``), recorded on the checkout (``paid_period_start/end``).

        Paid ahead of that period end, the subscription stays where it is until then: its
        current period (which usage, ``invoicePreview`` and metered limits count in), its
        status and its plan. The worker's period-end sweep moves it into the paid period at
        that moment (:func:`enter_period`). Paid after it (PAST_DUE), the paid period starts
        at the old period end at once; when access had lapsed (EXPIRED), it starts now.

        A period is bought once (the unique index ``checkouts_renewal_paid_key``; its
        renewals are decided one at a time under the subscription's row lock). A second
        payment for it — another renewal checkout of the same period, one that expired while
        the subscription stayed live and was paid late — or for a period that is no longer
        the next one, or at a plan the next period is no longer at (a plan change since),
        completes its checkout and buys nothing: its price comes back as a pending credit for
        the next push checkout. Once a period is paid, its other OPEN renewal checkouts
        expire (nothing is owed for it any more).
        """
        sub = await self.lock_subscription(subscription_id=subscription_id)
        if sub is None:
            raise ApplyError(f"renewal of an unknown subscription {subscription_id}")
        if sub.status == "CANCELED":
            log.warning("renewal %s paid for canceled subscription %s", checkout.id, sub.id)
            return
        plan = await self.plan(checkout.plan_id)
        if sub.status == "EXPIRED":
            other = await live_subscription(self.conn, sub.customer_id, plan.id, besides=sub.id)
            if other is not None:
                # Access lapsed and the customer bought the plan anew since: this late
                # payment revives nothing (one live subscription per plan); it is credited.
                await self.credit_renewal(other, checkout, plan)
                return
        if sub.status == "EXPIRED" or sub.current_period_end is None:
            start = self.now  # access lapsed: the paid period starts now
        else:
            start = sub.current_period_end
        renews_from = checkout.renews_from or sub.current_period_end or start
        if (
            sub.current_period_end is not None and renews_from != sub.current_period_end
        ) or plan.id != sub.plan_at(renews_from):
            # Issued for a period that has started since (bought by another renewal), that
            # is gone (the subscription moved to a new period), or at a plan the subscription
            # left since (a plan change voided it): nothing of it is left to buy.
            await self.credit_renewal(sub, checkout, plan)
            return
        _, end = next_period(sub, plan, start)
        bought = await self.conn.fetchval(
            "UPDATE checkouts SET renews_from = $2, paid_period_start = $3, paid_period_end = $4 "
            "WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM checkouts WHERE subscription_id = $5 "
            "AND renews_from = $2 AND paid_period_start IS NOT NULL) RETURNING id",
            checkout.id,
            renews_from,
            start,
            end,
            sub.id,
        )
        if bought is None:
            await self.credit_renewal(sub, checkout, plan)
            return
        # The period is paid: another renewal of it (or of an older one) is void.
        voided = await self.conn.fetch(
            "UPDATE checkouts SET status = 'EXPIRED', updated_at = $4 WHERE id IN (SELECT id "
            "FROM checkouts WHERE subscription_id = $1 AND purpose = 'renewal' "
            "AND status = 'OPEN' AND renews_from <= $2 AND id <> $3 FOR UPDATE SKIP LOCKED) "
            "RETURNING *",
            sub.id,
            renews_from,
            checkout.id,
            self.now,
        )
        self.out += [
            checkout_event("checkout.expired", checkout_from_row(r), self.now) for r in voided
        ]
        # Paid ahead, it waits for the period end (the worker's sweep moves it then); a plan
        # change scheduled for then is the plan it paid for (``Subscription.plan_at``).
        if start <= self.now:
            updated = await enter_period(self.conn, sub, plan, start=start, end=end, now=self.now)
            self.out.append(subscription_event("subscription.updated", updated, self.now))

    async def credit_renewal(self, sub: Subscription, checkout: Checkout, plan: Plan) -> None:
        """``checkout`` (a renewal, paid) buys no period: its price becomes a pending credit
        for ``sub``'s next push checkout (the invoice items it carried are settled apart)."""

        price = plan.price(checkout.currency)
        amount = price.minor * checkout.quantity if price is not None else 0
        log.warning(
            "renewal %s of subscription %s paid for a period paid already (or gone): "
            "crediting %s minor units",
            checkout.id,
            sub.id,
            amount,
        )
        if amount:
            await carry_credit(
                self.conn,
                sub.id,
                checkout.currency,
                -amount,
                self.now,
                description=RENEWAL_PAID_TWICE,
            )

    async def subscription_updated(self, ev: BillingEvent) -> None:
        if ev.subscription is None:
            raise ApplyError("subscription.updated without a subscription snapshot")
        await self.apply_snapshot(
            ev.subscription, version_of(ev.subscription, ev.occurred_at), event=ev
        )

    async def apply_snapshot(
        self,
        snap: SubscriptionSnapshot,
        version: datetime | None,
        *,
        event: BillingEvent | None = None,
        checkout: Checkout | None = None,
    ) -> Subscription | None:
        """Create or update a provider-managed subscription from its snapshot; never regress."""
        if checkout is None:
            cid = snap.checkout_id or (event.checkout_id if event else None)
            checkout = await self.lock_checkout(cid, None) if cid else None  # checkout first
        sub = await self.lock_subscription(
            provider_subscription_id=snap.provider_subscription_id,
            subscription_id=snap.subscription_id,
            origin_checkout_id=checkout.id if checkout and checkout.purpose == cm.NEW else None,
        )
        if sub is not None:
            if not self.admits(sub, snap, version):
                return sub
            return await self.update_from_snapshot(sub, snap, version)
        customer_id = await self.resolve_customer(
            snap.customer_id or (event.customer_id if event else None),
            snap.external_customer_id or (event.external_customer_id if event else None),
            snap.provider_customer_id or (event.provider_customer_id if event else None),
        )
        if customer_id is None and checkout is not None:
            customer_id = checkout.customer_id
        if customer_id is None:
            raise ApplyError(
                f"cannot tell whose {self.provider} subscription "
                f"{snap.provider_subscription_id} this is"
            )
        plan_id = await self.plan_id_for_ref(snap.plan_ref, snap.currency)
        if plan_id is None and checkout is not None:
            plan_id = checkout.plan_id
        if plan_id is None:
            raise ApplyError(f"no plan has the {self.provider} reference {snap.plan_ref!r}")
        plan = await self.plan(plan_id)
        currency = (
            snap.currency
            or (checkout.currency if checkout else None)
            or (plan.prices[0].currency if plan.prices else None)
        )
        if currency is None:
            raise ApplyError("the subscription's currency is unknown")
        try:
            sub = await self.insert_subscription(
                customer_id=customer_id,
                plan=plan,
                currency=currency.upper(),
                quantity=snap.quantity or (checkout.quantity if checkout else 1),
                origin_checkout_id=checkout.id if checkout and checkout.purpose == cm.NEW else None,
                snapshot=snap,
                version=version,
            )
        except AlreadySubscribed as exc:
            # A provider's second live subscription to a plan the customer holds (made at
            # the provider, or by a checkout completed as a duplicate): not recorded as one;
            # its payments still are (as the customer's), for the operator to refund.
            log.warning(
                "%s subscription %s duplicates live subscription %s of the same plan: not recorded",
                self.provider,
                snap.provider_subscription_id,
                exc.existing.id,
            )
            return None
        if checkout is not None and checkout.subscription_id is None:
            await self.conn.execute(
                "UPDATE checkouts SET subscription_id = $2, updated_at = $3 WHERE id = $1",
                checkout.id,
                sub.id,
                self.now,
            )
        await self.learn_customer(customer_id, snap.provider_customer_id)
        return sub

    def admits(
        self, sub: Subscription, snap: SubscriptionSnapshot, version: datetime | None
    ) -> bool:
        """THE ordering check: whether ``snap`` (the provider's state at ``version``) may
        overwrite ``sub``. Every path that writes a provider snapshot asks it first.

        Admitted: a state without a version (our own operation's result: the newest we know),
        a strictly newer one, or one re-fetched from the provider after ``sub``'s current
        version was applied. Not admitted: an older one. A tie (times in whole seconds) is
        admitted only from a provider that cannot be asked (the later delivery wins); from one
        that can, it was re-fetched before this transaction, so a tie here means a concurrent
        apply moved the version meanwhile: the delivery is retried (and re-fetched) later.
        """
        current = sub.provider_updated_at
        if version is None or current is None or version > current:
            return True
        psid = snap.provider_subscription_id
        if psid in self.refreshed:
            if self.refreshed[psid] == current:
                return True
        elif version == current:
            if not self.can_fetch:
                return True
            if self.retry_unsettled:
                raise ApplyError(
                    f"{self.provider} snapshot of {sub.id} ties with one applied meanwhile; "
                    "retrying to re-fetch it"
                )
        log.info(
            "%s snapshot of %s from %s is not newer than %s: ignored",
            self.provider,
            sub.id,
            version.isoformat(),
            current.isoformat(),
        )
        return False

    async def update_from_snapshot(
        self, sub: Subscription, snap: SubscriptionSnapshot, version: datetime | None
    ) -> Subscription:
        values = _snapshot_values(snap)
        plan_id = await self.plan_id_for_ref(snap.plan_ref, snap.currency or sub.currency)
        values["plan_id"] = plan_id or sub.plan_id
        values["quantity"] = snap.quantity or sub.quantity
        values["current_period_start"] = values["current_period_start"] or sub.current_period_start
        values["current_period_end"] = values["current_period_end"] or sub.current_period_end
        if values["provider_subscription_id"] is None:
            values["provider_subscription_id"] = sub.provider_subscription_id
        values.pop("currency", None)
        if values["plan_id"] == sub.pending_plan_id:
            values["pending_plan_id"] = None
            values["pending_plan_at"] = None
        if values["status"] in LIVE_FOR_PLAN and (
            sub.status not in LIVE_FOR_PLAN or values["plan_id"] != sub.plan_id
        ):
            other = await live_subscription(
                self.conn, sub.customer_id, values["plan_id"], besides=sub.id
            )
            if other is not None:
                # The provider made a second live subscription of one customer to one plan
                # (e.g. an INCOMPLETE one paid after another was bought): it is not recorded
                # as live; its payments are, for the operator to refund.
                log.warning(
                    "%s subscription %s would be a second live one to the plan of %s: "
                    "its status and plan are kept",
                    self.provider,
                    sub.id,
                    other.id,
                )
                values["status"] = sub.status
                values["plan_id"] = sub.plan_id
        values["updated_at"] = self.now
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(values, start=3))
        # The version never goes back (GREATEST ignores a NULL: no version, no change).
        row = await self.conn.fetchrow(
            f"UPDATE subscriptions SET provider_updated_at = GREATEST(provider_updated_at, $2), "  # noqa: S608
            f"{sets} WHERE id = $1 RETURNING *",
            sub.id,
            version,
            *values.values(),
        )
        updated = subscription_from_row(row)
        await self.learn_customer(updated.customer_id, snap.provider_customer_id)
        self.out.append(subscription_event("subscription.updated", updated, self.now))
        return updated

    # -- payments -------------------------------------------------------------------------------

    async def payment_succeeded(self, ev: BillingEvent) -> None:
        info = ev.payment
        if info is None:
            raise ApplyError("payment.succeeded without payment details")
        checkout = await self.lock_checkout(
            info.checkout_id or ev.checkout_id, info.provider_checkout_id or ev.provider_checkout_id
        )
        psid = info.provider_subscription_id or (
            ev.subscription.provider_subscription_id if ev.subscription else None
        )
        sub = await self.lock_subscription(
            provider_subscription_id=psid,
            subscription_id=checkout.subscription_id if checkout else None,
        )
        customer_id = (
            (checkout.customer_id if checkout else None)
            or (sub.customer_id if sub else None)
            or await self.resolve_customer(
                info.customer_id or ev.customer_id,
                ev.external_customer_id,
                info.provider_customer_id or ev.provider_customer_id,
            )
        )
        # Money for another provider session than the checkout's (when the payment says
        # which) is not the checkout's, whatever checkout id its metadata names.
        session = info.provider_checkout_id or ev.provider_checkout_id
        matched = (
            checkout is not None
            and checkout.currency == info.amount.currency
            and (session is None or self.binds(checkout, session))
        )
        payment = await self.insert_payment(
            info,
            ev.occurred_at,
            status="succeeded",
            checkout=checkout if matched else None,
            customer_id=customer_id,
            subscription_id=sub.id if sub else None,
        )
        if payment is not None:
            await self.learn_customer(
                customer_id, info.provider_customer_id or ev.provider_customer_id
            )
            self.out.append(payment_event("payment.succeeded", payment, self.now))
            if matched and checkout is not None:
                await self.take_payment(checkout, payment)
            if (
                sub is not None
                and ev.subscription is None
                and sub.status == "PAST_DUE"
                and not self.stale_hint(sub, ev.occurred_at)
            ):
                await self.set_status(sub, "ACTIVE", ev.occurred_at)
        if ev.subscription is not None:
            await self.apply_snapshot(
                ev.subscription, version_of(ev.subscription, ev.occurred_at), event=ev
            )

    async def payment_failed(self, ev: BillingEvent) -> None:
        info = ev.payment
        checkout = await self.lock_checkout(
            (info.checkout_id if info else None) or ev.checkout_id,
            (info.provider_checkout_id if info else None) or ev.provider_checkout_id,
        )
        psid = (info.provider_subscription_id if info else None) or (
            ev.subscription.provider_subscription_id if ev.subscription else None
        )
        sub = await self.lock_subscription(
            provider_subscription_id=psid,
            subscription_id=checkout.subscription_id if checkout else None,
        )
        if info is not None and info.provider_ref:
            payment = await self.insert_payment(
                info,
                ev.occurred_at,
                status="failed",
                checkout=checkout,
                customer_id=(checkout.customer_id if checkout else None)
                or (sub.customer_id if sub else None),
                subscription_id=sub.id if sub else None,
            )
            if payment is not None:
                self.out.append(payment_event("payment.failed", payment, self.now))
        if ev.subscription is not None:
            await self.apply_snapshot(
                ev.subscription, version_of(ev.subscription, ev.occurred_at), event=ev
            )
        elif sub is not None and sub.status in ("ACTIVE", "TRIALING"):
            if self.stale_hint(sub, ev.occurred_at):
                log.info("payment.failed older than %s's last snapshot: ignored", sub.id)
            else:
                await self.set_status(sub, "PAST_DUE", ev.occurred_at)

    def stale_hint(self, sub: Subscription, occurred_at: datetime) -> bool:
        """The ordering check for a status inferred from a payment event without a snapshot
        (failed → PAST_DUE, recovered → ACTIVE): stale when older than the state applied. It
        carries no state to re-fetch against, so a tie counts as new."""
        return sub.provider_updated_at is not None and occurred_at < sub.provider_updated_at

    async def set_status(
        self, sub: Subscription, status: str, version: datetime | None = None
    ) -> Subscription:
        """Set ``sub``'s status; ``version``: the provider's time of the fact (advances the
        subscription's version, so older snapshots no longer undo it)."""
        row = await self.conn.fetchrow(
            "UPDATE subscriptions SET status = $2, updated_at = $3, "
            "provider_updated_at = GREATEST(provider_updated_at, $4) WHERE id = $1 RETURNING *",
            sub.id,
            status,
            self.now,
            version,
        )
        updated = subscription_from_row(row)
        self.out.append(subscription_event("subscription.updated", updated, self.now))
        return updated

    async def payment_received(self, ev: BillingEvent) -> None:
        """A bank transfer: match its reference (case-insensitive) to one of our checkouts."""
        info = ev.payment
        if info is None:
            raise ApplyError("payment.received without payment details")
        if info.flag is not None:
            await self.flag_payment(info, ev.occurred_at, info.flag)
            return
        checkout: Checkout | None = None
        if info.reference:
            row = await self.conn.fetchrow(
                "SELECT * FROM checkouts WHERE provider = $1 AND payment_reference IS NOT NULL "
                "AND upper(payment_reference) = upper($2) FOR UPDATE",
                self.provider,
                info.reference.strip(),
            )
            checkout = checkout_from_row(row) if row else None
        if checkout is None and (info.checkout_id or ev.checkout_id):
            checkout = await self.lock_checkout(info.checkout_id or ev.checkout_id, None)
        matched = checkout is not None and checkout.currency == info.amount.currency
        payment = await self.insert_payment(
            info,
            ev.occurred_at,
            status="succeeded" if matched else "unmatched",
            checkout=checkout if matched else None,
            customer_id=checkout.customer_id if matched and checkout else None,
            subscription_id=checkout.subscription_id if matched and checkout else None,
        )
        if payment is None:
            # Counted already — unless the reference came with another amount: kept flagged.
            reason = await self.conflict(info)
            if reason is not None:
                await self.flag_payment(info, ev.occurred_at, reason)
            return
        if matched and checkout is not None:
            self.out.append(payment_event("payment.succeeded", payment, self.now))
            await self.take_payment(checkout, payment)
        else:
            log.info(
                "%s transfer %s matched no checkout: kept unmatched",
                self.provider,
                info.provider_ref,
            )
            self.out.append(payment_event("payment.unmatched", payment, self.now))

    async def assign(self, payment_id: UUID, checkout: Checkout) -> Payment:
        """An admin applies an unmatched payment to ``checkout`` (locked) as if it had matched."""
        row = await self.conn.fetchrow(
            "UPDATE payments SET status = 'succeeded', checkout_id = $2, customer_id = $3, "
            "subscription_id = $4 WHERE id = $1 RETURNING *",
            payment_id,
            checkout.id,
            checkout.customer_id,
            checkout.subscription_id,
        )
        payment = payment_from_row(row)
        self.out.append(payment_event("payment.succeeded", payment, self.now))
        await self.take_payment(checkout, payment)
        return payment

    async def refund_succeeded(self, ev: BillingEvent) -> None:
        refund = ev.refund
        if refund is None:
            raise ApplyError("refund.succeeded without refund details")
        row = await self.conn.fetchrow(
            "SELECT * FROM payments WHERE provider = $1 AND provider_ref = $2 FOR UPDATE",
            self.provider,
            refund.payment_provider_ref,
        )
        if row is None:
            raise ApplyError(
                f"refund of an unknown {self.provider} payment {refund.payment_provider_ref}"
            )
        payment = payment_from_row(row)
        # ``amount_refunded`` is the total so far: a late, smaller total never lowers it.
        total = min(max(payment.refunded_minor, refund.amount_refunded.minor), payment.amount_minor)
        if total == payment.refunded_minor:
            return
        status = "refunded" if total >= payment.amount_minor else "partially_refunded"
        row = await self.conn.fetchrow(
            "UPDATE payments SET refunded_minor = $2, status = $3 WHERE id = $1 RETURNING *",
            payment.id,
            total,
            status,
        )
        if payment.checkout_id is not None:
            await self.conn.execute(
                "UPDATE checkouts SET refunded_minor = refunded_minor + $2, updated_at = $3 "
                "WHERE id = $1",
                payment.checkout_id,
                total - payment.refunded_minor,
                self.now,
            )
        self.out.append(payment_event("payment.refunded", payment_from_row(row), self.now))

    # -- provider grants ------------------------------------------------------------------------

    async def grant_updated(self, ev: BillingEvent) -> None:
        grant = ev.grant
        if grant is None:
            raise ApplyError("grant.updated without a grant")
        customer_id = await self.resolve_customer(
            grant.customer_id or ev.customer_id,
            grant.external_customer_id or ev.external_customer_id,
            grant.provider_customer_id or ev.provider_customer_id,
        )
        if customer_id is None:
            raise ApplyError(f"cannot tell whose {self.provider} grant {grant.grant_id} this is")
        grant_row_id = await self.conn.fetchval(
            "INSERT INTO provider_grants (provider, grant_id, customer_id, benefit_id, "
            "benefit_type, granted, provider_subscription_id, metadata, provider_updated_at, "
            "created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$10) "
            "ON CONFLICT (provider, grant_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, "
            "benefit_id = EXCLUDED.benefit_id, benefit_type = EXCLUDED.benefit_type, "
            "granted = EXCLUDED.granted, provider_subscription_id = "
            "EXCLUDED.provider_subscription_id, metadata = EXCLUDED.metadata, "
            "provider_updated_at = EXCLUDED.provider_updated_at, updated_at = EXCLUDED.updated_at "
            "WHERE provider_grants.provider_updated_at IS NULL "
            "OR provider_grants.provider_updated_at <= EXCLUDED.provider_updated_at RETURNING id",
            self.provider,
            grant.grant_id,
            customer_id,
            grant.benefit_id,
            grant.benefit_type,
            grant.granted,
            grant.provider_subscription_id,
            dict(grant.metadata) or None,
            ev.occurred_at,
            self.now,
        )
        if grant_row_id is None:
            log.info("%s grant %s: an older state, ignored", self.provider, grant.grant_id)
            return
        await self.conn.execute(
            "DELETE FROM provider_grant_features WHERE grant_id = $1", grant_row_id
        )
        features: Sequence[FeatureGrant] = []
        if grant.granted:
            mapped = self.runtime.pm.hook.map_provider_grant(provider=self.provider, grant=grant)
            features = [f for f in (mapped or []) if _valid_feature(f)]
        await self.conn.executemany(
            "INSERT INTO provider_grant_features (grant_id, customer_id, feature, enabled, "
            "limit_value) VALUES ($1,$2,$3,$4,$5)",
            [(grant_row_id, customer_id, f.feature, f.enabled, f.limit) for f in features],
        )
        await self.learn_customer(
            customer_id, grant.provider_customer_id or ev.provider_customer_id
        )
        self.out.append(
            DomainEvent(
                id=str(uuid.uuid4()),
                type="entitlements.updated",
                occurred_at=self.now,
                data={
                    "customer_id": str(customer_id),
                    "provider": self.provider,
                    "grant_id": grant.grant_id,
                    "granted": grant.granted,
                },
            )
        )


def _valid_feature(grant: object) -> bool:
    if not isinstance(grant, FeatureGrant):
        return False
    if not isinstance(grant.feature, str) or not (0 < len(grant.feature) <= 100):
        return False
    return grant.limit is None or (isinstance(grant.limit, Decimal) and grant.limit.is_finite())


def _snapshot_values(snap: SubscriptionSnapshot) -> dict[str, Any]:
    return {
        "provider_subscription_id": snap.provider_subscription_id or None,
        "status": str(snap.status),
        "current_period_start": snap.current_period_start,
        "current_period_end": snap.current_period_end,
        "trial_end": snap.trial_end,
        "cancel_at_period_end": snap.cancel_at_period_end,
        "canceled_at": snap.canceled_at,
        "ended_at": snap.ended_at,
        "currency": snap.currency.upper() if snap.currency else None,
        "quantity": snap.quantity or 1,
    }


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
        crow = await conn.fetchrow("SELECT * FROM checkouts WHERE id = $1 FOR UPDATE", checkout_id)
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
