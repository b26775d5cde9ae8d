"""Reconciliation: ask a provider for the state of the subscriptions we hold there and apply
what we missed (``billing-gql reconcile PROVIDER``, and the worker's :func:`reconcile_due`).

The provider's ``reconcile`` hook returns normalized events (snapshots dated by the provider's
clock at the moment it read them, payments it received); they go through the same idempotent
apply path as webhooks, so a reconciliation never regresses newer state and running it twice
changes nothing more. The cursor a run returns (e.g. the last transaction seen) is kept in
``reconcile_state`` and handed to the next run; so is the worker's schedule
(``Provider.reconcile_interval``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from billing_gql.applier.engine import apply_billing_events
from billing_gql.applier.refresh import subscription_refs
from billing_gql.catalog.service import load_plans
from billing_gql.context import ServiceContext
from billing_gql.core.subscriptions import ENDED_STATUSES, Subscription, subscription_from_row
from billing_gql.errors import UserInputError
from billing_gql.money import shown
from billing_gql.plugins.types import DomainEvent, ProviderCapability, ReconcileRequest
from billing_gql.routing import error_text, log_failure, redact
from billing_gql.subscriptions.service import load_subscriptions

__all__ = ["Change", "PaymentRecorded", "ReconcileReport", "reconcile_due", "reconcile_provider"]

log = logging.getLogger(__name__)

# What a change report compares (column → how the API names it).
_FIELDS = {
    "status": "status",
    "cancel_at_period_end": "cancelAtPeriodEnd",
    "current_period_start": "currentPeriodStart",
    "current_period_end": "currentPeriodEnd",
    "trial_end": "trialEnd",
    "canceled_at": "canceledAt",
    "ended_at": "endedAt",
    "plan_id": "plan",
    "quantity": "quantity",
}


@dataclass(frozen=True)
class Change:
    """One subscription whose state reconciliation changed."""

    subscription_id: UUID
    provider_subscription_id: str | None
    fields: dict[str, tuple[Any, Any]]
    """API field name → (before, after)."""

    def describe(self) -> str:
        parts = [f"{name} {_show(old)} → {_show(new)}" for name, (old, new) in self.fields.items()]
        ref = f" ({self.provider_subscription_id})" if self.provider_subscription_id else ""
        return f"subscription {self.subscription_id}{ref}: " + ", ".join(parts)


@dataclass(frozen=True)
class PaymentRecorded:
    """Money reconciliation recorded (a payment no webhook had brought)."""

    provider_ref: str | None
    amount: str
    currency: str
    status: str
    """``succeeded`` (matched to a checkout) or ``unmatched``."""
    checkout_id: str | None
    checkout_completed: bool

    def describe(self) -> str:
        where = f"checkout {self.checkout_id}" if self.checkout_id else "no checkout (unmatched)"
        done = ", completing it" if self.checkout_completed else ""
        return f"payment {self.provider_ref}: {self.amount} {self.currency} to {where}{done}"


@dataclass(frozen=True)
class ReconcileReport:
    provider: str
    checked: int
    """Subscriptions handed to the provider."""
    events: int
    """Events the provider returned."""
    changes: Sequence[Change]
    payments: Sequence[PaymentRecorded] = ()
    """Payments recorded by this run (not those already known)."""


def _show(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


async def _held(runtime: ServiceContext, provider: str) -> list[Subscription]:
    rows = await runtime.db.fetch(
        "SELECT * FROM subscriptions WHERE provider = $1 AND status <> ALL($2::text[]) "
        "ORDER BY created_at",
        provider,
        list(ENDED_STATUSES),
    )
    return [subscription_from_row(r) for r in rows]


async def reconcile_provider(runtime: ServiceContext, name: str) -> ReconcileReport:
    """Reconcile every subscription we hold at provider ``name`` that has not ended.

    :raises UserInputError: PROVIDER_NOT_CONFIGURED, NOT_SUPPORTED (no ``reconcile``),
        PROVIDER_ERROR / PROVIDER_UNAVAILABLE (the provider failed; nothing was applied).
    """
    provider = runtime.providers.get_configured(name)
    if provider is None:
        raise UserInputError("PROVIDER_NOT_CONFIGURED", f"provider {shown(name)} is not configured")
    if ProviderCapability.RECONCILE not in type(provider).capabilities():
        raise UserInputError("NOT_SUPPORTED", f"provider {shown(name)} cannot reconcile")
    # One that can, but not as configured (Provider.capabilities_for), explains itself: its
    # reconcile raises NotSupported naming the missing setting.
    subs = await _held(runtime, name)
    refs = await subscription_refs(runtime.db.pool, subs)
    cursor = await runtime.db.fetchval(
        "SELECT cursor FROM reconcile_state WHERE provider = $1", name
    )
    now = await runtime.clock.now()
    request = ReconcileRequest(subscriptions=refs, cursor=dict(cursor or {}), now=now)
    try:
        result = await provider.reconcile(request)
    except UserInputError as exc:
        raise UserInputError(exc.code, redact(provider, exc.message)) from None
    before = {s.id: s for s in subs}
    applied: list[DomainEvent] = []
    if result.events:
        applied = await apply_billing_events(runtime, name, result.events)
    # Only once the events are in: a failed run resumes from the previous cursor.
    await runtime.db.execute(
        "INSERT INTO reconcile_state (provider, cursor, last_run_at, last_error, updated_at) "
        "VALUES ($1, $2, $3, NULL, $3) ON CONFLICT (provider) DO UPDATE SET "
        "cursor = EXCLUDED.cursor, last_run_at = EXCLUDED.last_run_at, last_error = NULL, "
        "updated_at = EXCLUDED.updated_at",
        name,
        dict(result.cursor),
        now,
    )
    after = {s.id: s for s in await load_subscriptions(runtime.db.pool, list(before))}
    changes = []
    for sub_id, old in before.items():
        new = after.get(sub_id)
        if new is None:
            continue
        fields = {
            label: (getattr(old, column), getattr(new, column))
            for column, label in _FIELDS.items()
            if getattr(old, column) != getattr(new, column)
        }
        if fields:
            changes.append(Change(sub_id, new.provider_subscription_id, fields))
    # Plans are reported by code: every plan a change names, in one lookup.
    moved = [c.fields["plan"] for c in changes if "plan" in c.fields]
    if moved:
        ids = list({plan_id for pair in moved for plan_id in pair})
        codes = {p.id: p.code for p in await load_plans(runtime.db.pool, ids=ids)}
        for change in changes:
            if "plan" in change.fields:
                old_id, new_id = change.fields["plan"]
                change.fields["plan"] = (codes.get(old_id), codes.get(new_id))
    payments = _payments(applied)
    log.info(
        "reconciled %s: %d subscriptions, %d events, %d changed, %d payments recorded",
        name,
        len(subs),
        len(result.events),
        len(changes),
        len(payments),
    )
    return ReconcileReport(name, len(subs), len(result.events), changes, payments)


def _payments(events: Sequence[DomainEvent]) -> list[PaymentRecorded]:
    completed = {e.data.get("checkout_id") for e in events if e.type == "checkout.completed"}
    found = []
    for event in events:
        if event.type not in ("payment.succeeded", "payment.unmatched"):
            continue
        data = event.data
        checkout_id = data.get("checkout_id")
        found.append(
            PaymentRecorded(
                provider_ref=data.get("provider_ref"),
                amount=data["amount"]["amount"],
                currency=data["amount"]["currency"],
                status=data["status"],
                checkout_id=checkout_id,
                checkout_completed=checkout_id is not None and checkout_id in completed,
            )
        )
    return found


async def reconcile_due(runtime: ServiceContext, now: datetime) -> int:
    """The worker's sweep: reconcile each configured provider whose
    ``reconcile_interval()`` has passed since its last scheduled run; returns how many ran.

    A run is claimed by moving ``reconcile_state.next_run_at`` ahead in one conditional
    ``UPDATE``, so several workers never run one provider's reconciliation at once; a failed
    run is recorded in ``last_error`` and tried again after the interval.
    """
    ran = 0
    for provider in runtime.providers.configured():
        interval = (
            provider.reconcile_interval()
            if provider.supports(ProviderCapability.RECONCILE)
            else None
        )
        if interval is None:
            continue
        await runtime.db.execute(
            "INSERT INTO reconcile_state (provider, next_run_at, updated_at) "
            "VALUES ($1, $2, $2) ON CONFLICT (provider) DO NOTHING",
            provider.name,
            now,
        )
        claimed = await runtime.db.fetchval(
            "UPDATE reconcile_state SET next_run_at = $3, updated_at = $2 "
            "WHERE provider = $1 AND (next_run_at IS NULL OR next_run_at <= $2) "
            "RETURNING provider",
            provider.name,
            now,
            now + interval,
        )
        if claimed is None:
            continue
        ran += 1
        try:
            await reconcile_provider(runtime, provider.name)
        except Exception as exc:
            message = (
                redact(provider, exc.message)
                if isinstance(exc, UserInputError)
                else error_text(provider, exc)
            )
            if isinstance(exc, UserInputError):
                log.warning("scheduled reconciliation of %s failed: %s", provider.name, message)
            else:
                log_failure(
                    log,
                    provider,
                    exc,
                    "scheduled reconciliation of %s failed",
                    provider.name,
                    level=logging.WARNING,
                )
            await runtime.db.execute(
                "UPDATE reconcile_state SET last_error = $2, updated_at = $3 WHERE provider = $1",
                provider.name,
                message,
                now,
            )
    return ran
