"""Checkout use cases: start a checkout (new purchase, push renewal, pending charges), create
its session at the provider, and read checkouts.

A checkout is stored OPEN first (so the provider's webhooks and our own retries can always find
it by id), then its provider session is created under the checkout's row lock by
:func:`prepare_checkout`. Whoever holds the lock and finds the session missing creates it, so a
concurrent duplicate (the same idempotency key) waits for the first and returns the same
result, and the provider is asked once (with a stable idempotency key) per checkout.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.applier.engine import LIVE_FOR_PLAN, apply_events
from billing_gql.catalog.service import load_plans
from billing_gql.checkout.session import CheckoutResult, prepare_checkout
from billing_gql.context import ServiceContext
from billing_gql.core import checkout as m
from billing_gql.core.catalog import Plan
from billing_gql.core.checkout import Checkout, checkout_from_row
from billing_gql.core.customers import Customer
from billing_gql.customers.service import load_customers
from billing_gql.errors import UserInputError
from billing_gql.money import MAX_QUANTITY, Money, MoneyError, normalize_currency, shown
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import BillingEvent, EventKind
from billing_gql.routing import choose_provider
from billing_gql.store.checkouts_sql import clear_trial_days, insert_checkout_row
from billing_gql.store.invoice_items_sql import carry_credit
from billing_gql.validation import Problems

# The provider session lives in :mod:`.session`; it stays reachable here with the other
# checkout use cases.
__all__ = [
    "CheckoutDraft",
    "CheckoutResult",
    "carry_credit",
    "create_checkout",
    "get_checkout",
    "has_plan_access",
    "holds_plan",
    "load_checkouts",
    "open_push_checkouts",
    "paid_renewals",
    "prepare_checkout",
]


@dataclass(frozen=True)
class CheckoutDraft:
    """``createCheckout``'s input; ``None`` fields take their defaults (docs/api.md#checkout)."""

    customer_id: UUID | None
    plan_code: str
    provider: str | None = None
    currency: str | None = None
    quantity: int = 1
    success_url: str | None = None
    cancel_url: str | None = None
    idempotency_key: str | None = None
    by_admin: bool = False
    """Sent with an admin key (not a customer token): a private plan may be sold without a grant
    of access, and it decides which redirect URLs are allowed
    (:meth:`~billing_gql.validation.Problems.redirect_url`); not part of the fingerprint."""

    def fingerprint(self) -> str:
        """What "the same parameters" means for an idempotency key: the request as sent."""
        canonical = json.dumps(
            {
                "plan": self.plan_code,
                "provider": self.provider.strip().lower() if self.provider else None,
                "currency": self.currency.strip().upper() if self.currency else None,
                "quantity": self.quantity,
                "success_url": self.success_url,
                "cancel_url": self.cancel_url,
            },
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


# -- reads ------------------------------------------------------------------------------------


async def load_checkouts(
    conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[UUID]
) -> list[Checkout]:
    rows = await conn.fetch("SELECT * FROM checkouts WHERE id = ANY($1::uuid[])", list(ids))
    return [checkout_from_row(r) for r in rows]


async def get_checkout(conn: asyncpg.Connection | asyncpg.Pool, id: UUID) -> Checkout | None:
    found = await load_checkouts(conn, [id])
    return found[0] if found else None


async def paid_renewals(
    conn: asyncpg.Connection | asyncpg.Pool, subscription_ids: Sequence[UUID]
) -> dict[UUID, Checkout]:
    """Per subscription, the renewal paid ahead for its next period: the subscription has not
    reached the end of its current period yet, and moves into the paid one then."""
    rows = await conn.fetch(
        "SELECT c.* FROM checkouts c JOIN subscriptions s ON s.id = c.subscription_id "
        "AND c.renews_from = s.current_period_end WHERE c.subscription_id = ANY($1::uuid[]) "
        "AND c.paid_period_start IS NOT NULL",
        list(subscription_ids),
    )
    return {r["subscription_id"]: checkout_from_row(r) for r in rows}


async def open_push_checkouts(
    conn: asyncpg.Connection | asyncpg.Pool, subscription_ids: Sequence[UUID]
) -> dict[UUID, Checkout]:
    """Per subscription, its newest OPEN renewal (or pending-charges) checkout."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (subscription_id) * FROM checkouts "
        "WHERE subscription_id = ANY($1::uuid[]) AND status = 'OPEN' AND purpose <> 'new' "
        "ORDER BY subscription_id, created_at DESC, id DESC",
        list(subscription_ids),
    )
    return {r["subscription_id"]: checkout_from_row(r) for r in rows}


# -- new checkouts ----------------------------------------------------------------------------


async def _by_key(
    conn: asyncpg.Connection | asyncpg.Pool, customer_id: UUID, key: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, request_fingerprint FROM checkouts WHERE customer_id = $1 "
        "AND idempotency_key = $2",
        customer_id,
        key,
    )


async def _replay(runtime: ServiceContext, row: asyncpg.Record, fingerprint: str) -> CheckoutResult:
    if row["request_fingerprint"] != fingerprint:
        raise UserInputError(
            "IDEMPOTENCY_CONFLICT",
            "this idempotency key was used with different parameters",
            ["idempotencyKey"],
        )
    return await prepare_checkout(runtime, row["id"])


async def create_checkout(runtime: ServiceContext, draft: CheckoutDraft) -> CheckoutResult:
    """Validate, store OPEN, and create the provider session (see the module docstring).

    Raises :class:`~billing_gql.errors.UserInputErrors` for bad input (nothing written) and
    ``IDEMPOTENCY_CONFLICT``; a provider refusal is returned as ``CheckoutResult.error`` with
    the checkout FAILED.
    """
    db = runtime.db
    p = Problems()
    key, customer = await _key_and_customer(runtime, draft, p)
    fingerprint = draft.fingerprint()
    if key is not None and not p:
        existing = await _by_key(db.pool, customer.id, key)
        if existing is not None:
            return await _replay(runtime, existing, fingerprint)
    purchase = await _validate_purchase(runtime, draft, customer, p)
    provider, plan = purchase.provider, purchase.plan

    now = await runtime.clock.now()
    cls = type(provider)
    trial_days = await _trial_days(db.pool, customer.id, plan)
    values = _new_checkout_values(
        runtime, draft, purchase, key=key, fingerprint=fingerprint, trial_days=trial_days, now=now
    )
    conflict = "ON CONFLICT (customer_id, idempotency_key) DO NOTHING"
    checkout_id = await insert_checkout(db.pool, provider, values, conflict)
    if checkout_id is None:
        # Lost a race with the same key: the winner's row decides.
        existing = await _by_key(db.pool, customer.id, key or "")
        assert existing is not None
        return await _replay(runtime, existing, fingerprint)
    if cls.bank_transfer and not cls.charges_renewals and trial_days > 0:
        # A trial by bank transfer starts at once with nothing to pay: the renewal checkout
        # issued before the trial ends collects the price (as a card provider's trial does).
        # Asking for a transfer now would charge the first period twice.
        started = await _start_trial(
            runtime, provider, checkout_id, customer_id=customer.id, plan_id=plan.id, now=now
        )
        if started is not None:
            return CheckoutResult(started)
    return await prepare_checkout(runtime, checkout_id)


async def _key_and_customer(
    runtime: ServiceContext, draft: CheckoutDraft, p: Problems
) -> tuple[str | None, Customer]:
    """The idempotency key (``None`` when invalid: its problem is in ``p``) and the customer.

    :raises UserInputErrors: NOT_FOUND (customer), with the key's problem if any.
    """
    key = draft.idempotency_key
    if key is not None and not (0 < len(key) <= 255):
        p.add("INVALID_INPUT", "idempotencyKey must be 1-255 characters", "idempotencyKey")
        key = None
    pool = runtime.db.pool
    customers = await load_customers(pool, ids=[draft.customer_id]) if draft.customer_id else []
    if not customers:
        p.add("NOT_FOUND", "no such customer", "customerId")
        p.raise_if_any()
    if customers[0].deleted_at is not None:
        p.add("INVALID_STATE", "the customer was deleted", "customerId")
        p.raise_if_any()
    return key, customers[0]


@dataclass(frozen=True)
class _Purchase:
    """A validated new purchase."""

    customer: Customer
    plan: Plan
    price: Money
    currency: str
    provider: Provider
    success_url: str | None
    cancel_url: str | None


async def _validate_purchase(
    runtime: ServiceContext, draft: CheckoutDraft, customer: Customer, p: Problems
) -> _Purchase:
    """Quantity, plan, currency, redirect URLs and provider: every problem at once (with
    those already in ``p``).

    :raises UserInputErrors: when there is any problem.
    """
    if draft.quantity < 1:
        p.add("INVALID_INPUT", "quantity must be at least 1", "quantity")
    elif draft.quantity > MAX_QUANTITY:
        p.add("QUANTITY_TOO_LARGE", f"quantity must be at most {MAX_QUANTITY}", "quantity")
    plan = await _purchasable_plan(runtime, draft, customer, p)
    currency: str | None = None
    if draft.currency is not None:
        try:
            currency = normalize_currency(draft.currency)
        except MoneyError as exc:
            p.add(exc.code, str(exc), "currency")
    elif customer.currency:
        currency = customer.currency
    elif plan is not None and plan.prices:
        currency = plan.prices[0].currency
    outbound = runtime.settings.outbound
    success_url = p.redirect_url(draft.success_url, "successUrl", outbound, admin=draft.by_admin)
    cancel_url = p.redirect_url(draft.cancel_url, "cancelUrl", outbound, admin=draft.by_admin)
    provider: Provider | None = None
    if plan is not None and not plan.archived and currency is not None:
        if plan.price(currency) is None:
            p.add(
                "UNSUPPORTED_CURRENCY",
                f"plan {shown(plan.code)} has no price in {currency}",
                "currency",
            )
        else:
            with p.at():
                provider = choose_provider(
                    runtime, plan, currency, customer.country, draft.provider
                )
    p.raise_if_any()
    assert plan is not None and currency is not None and provider is not None
    price = plan.price(currency)
    assert price is not None
    return _Purchase(customer, plan, price, currency, provider, success_url, cancel_url)


async def _purchasable_plan(
    runtime: ServiceContext, draft: CheckoutDraft, customer: Customer, p: Problems
) -> Plan | None:
    """The plan asked for (``None`` when not found, or private and not open to the
    customer); its problem, if any, goes to ``p``."""
    db = runtime.db
    plans = await load_plans(db.pool, codes=[draft.plan_code])
    plan: Plan | None = plans[0] if plans else None
    if plan is None:
        p.add("NOT_FOUND", f"no plan {shown(draft.plan_code)}", "planCode")
    elif (
        plan.private
        and not draft.by_admin
        and not await has_plan_access(db.pool, plan.id, customer.id)
    ):
        # As if it did not exist: a private plan is not revealed to other customers.
        plan = None
        p.add("NOT_FOUND", f"no plan {shown(draft.plan_code)}", "planCode")
    elif plan.archived:
        p.add("PLAN_ARCHIVED", f"plan {shown(plan.code)} is archived", "planCode")
    elif plan.interval != "ONE_TIME" and await holds_plan(db.pool, customer.id, plan.id):
        p.add(
            "ALREADY_SUBSCRIBED",
            f"the customer already has a live subscription to plan {shown(plan.code)}",
            "planCode",
        )
    return plan


def _new_checkout_values(
    runtime: ServiceContext,
    draft: CheckoutDraft,
    purchase: _Purchase,
    *,
    key: str | None,
    fingerprint: str,
    trial_days: int,
    now: datetime,
) -> dict[str, Any]:
    """The OPEN checkout row of a new purchase."""
    return {
        "customer_id": purchase.customer.id,
        "plan_id": purchase.plan.id,
        "provider": purchase.provider.name,
        "purpose": m.CheckoutPurpose.NEW,
        "currency": purchase.currency,
        "quantity": draft.quantity,
        "amount_minor": purchase.price.minor * draft.quantity,
        "success_url": purchase.success_url,
        "cancel_url": purchase.cancel_url,
        "idempotency_key": key,
        "request_fingerprint": fingerprint,
        "subscription_id": None,
        "trial_days": trial_days,
        "expires_at": now + checkout_ttl(runtime, purchase.provider),
        "created_at": now,
    }


async def holds_plan(
    conn: asyncpg.Connection | asyncpg.Pool, customer_id: UUID, plan_id: UUID
) -> bool:
    """Whether the customer has a live subscription (TRIALING, ACTIVE, PAST_DUE, PAUSED) to
    the plan, or one moving to it at its period end. The unique index
    ``subscriptions_live_plan_key`` is what guarantees it; this answers the common case with a
    clear ``ALREADY_SUBSCRIBED`` before anything is written."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE customer_id = $1 "
            "AND (plan_id = $2 OR pending_plan_id = $2) AND status = ANY($3::text[]))",
            customer_id,
            plan_id,
            list(LIVE_FOR_PLAN),
        )
    )


async def has_plan_access(
    conn: asyncpg.Connection | asyncpg.Pool, plan_id: UUID, customer_id: UUID
) -> bool:
    """Whether ``grantPlanAccess`` opened the (private) plan to the customer."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM plan_access WHERE plan_id = $1 AND customer_id = $2)",
            plan_id,
            customer_id,
        )
    )


async def _trial_days(
    conn: asyncpg.Connection | asyncpg.Pool, customer_id: UUID, plan: Plan
) -> int:
    """The trial a new purchase of ``plan`` grants: the plan's, once per customer and plan.
    A customer who had it before buys without one and pays at once (as Stripe's
    "trial for new customers only" does); ``trial_redemptions`` remembers each trial."""
    if plan.trial_days <= 0 or plan.interval == "ONE_TIME":
        return 0
    redeemed = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM trial_redemptions WHERE customer_id = $1 AND plan_id = $2)",
        customer_id,
        plan.id,
    )
    return 0 if redeemed else plan.trial_days


async def _start_trial(
    runtime: ServiceContext,
    provider: Provider,
    checkout_id: UUID,
    *,
    customer_id: UUID,
    plan_id: UUID,
    now: datetime,
) -> Checkout | None:
    """Claim the customer's trial of the plan and complete the (unpaid) checkout at once, in
    one transaction. ``None`` when a concurrent checkout claimed the trial first: this one
    then has no trial and asks for the payment like any other."""
    async with runtime.db.transaction() as conn:
        claimed = await conn.fetchval(
            "INSERT INTO trial_redemptions (customer_id, plan_id, created_at) "
            "VALUES ($1, $2, $3) ON CONFLICT (customer_id, plan_id) DO NOTHING RETURNING id",
            customer_id,
            plan_id,
            now,
        )
        if claimed is None:
            await clear_trial_days(conn, checkout_id)
            return None
        out = await apply_events(
            runtime, conn, provider.name, [completed_event(checkout_id, now)], now
        )
    for event in out:
        await runtime.emit(event)
    return await get_checkout(runtime.db.pool, checkout_id)


def checkout_ttl(runtime: ServiceContext, provider: Provider) -> timedelta:
    """How long a checkout of ``provider`` stays open (bank transfers take longer)."""
    billing = runtime.settings.billing
    minutes = (
        billing.bank_transfer_ttl_minutes
        if type(provider).bank_transfer
        else billing.checkout_ttl_minutes
    )
    return timedelta(minutes=minutes)


def completed_event(checkout_id: UUID, now: datetime) -> BillingEvent:
    """The completion of one of our own checkouts with nothing (more) to pay."""
    return BillingEvent(EventKind.CHECKOUT_COMPLETED, now, checkout_id=str(checkout_id))


async def insert_checkout(
    conn: asyncpg.Connection | asyncpg.Pool,
    provider: Provider,
    values: dict[str, Any],
    conflict: str,
) -> UUID | None:
    """Insert a checkout, reserving a fresh payment reference for bank-transfer providers
    (asking again when the reference is taken). ``None`` when ``conflict`` skipped it."""
    return await insert_checkout_row(
        conn,
        values,
        conflict,
        payment_reference=provider.payment_reference if type(provider).bank_transfer else None,
        provider_name=provider.name,
    )
