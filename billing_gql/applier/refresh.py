"""Settling snapshot order by asking the provider: the re-fetch step before an apply.

A provider snapshot is applied when its version (``SubscriptionSnapshot.updated_at``, else the
event's ``occurred_at``) is strictly newer than the newest one applied to that subscription
(``subscriptions.provider_updated_at``). When it is not — an older delivery still in flight, or
a tie (Stripe's times have whole seconds, so two changes within one second carry the same
time) — the snapshot cannot tell whether it is older or newer than what we hold. For a
provider that implements ``Provider.fetch_subscription``, :func:`refresh_events` then asks the
provider for the subscription's current state and puts it in place of the snapshot.

It runs **before** the apply transaction opens (a provider call never holds database locks),
in every apply entry point: webhook deliveries (``webhooks.apply``), ``apply_billing_events``
(reconciliation, manual completions) and the results of our own subscription operations. The
engine then admits a re-fetched state when the subscription's version is still the one seen
here: the fetch happened after that state was applied, so it is at least as new. A snapshot
that would change nothing (an echo of the state we hold, e.g. the provider's delivery about our
own operation, or a reconciliation finding nothing new) needs no fetch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

import asyncpg

from billing_gql.catalog.service import load_plans
from billing_gql.context import ServiceContext
from billing_gql.core.subscriptions import Subscription, subscription_from_row
from billing_gql.customers.service import load_customers
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import BillingEvent, SubscriptionRef, SubscriptionSnapshot
from billing_gql.routing import customer_info_of, plan_info, provider_customer_ids

__all__ = [
    "Refreshed",
    "can_fetch",
    "refresh_events",
    "refresh_snapshot",
    "subscription_refs",
    "version_of",
]

log = logging.getLogger(__name__)

Refreshed = Mapping[str, datetime]
"""Provider subscription id → the version (``provider_updated_at``) its snapshot was settled
against: re-fetched from the provider after that version was applied, or found to change
nothing."""


def version_of(snapshot: SubscriptionSnapshot, occurred_at: datetime | None) -> datetime | None:
    """A snapshot's version: the provider's time of the state, else the carrying event's time
    (``None``: unknown — the state is applied without advancing the subscription's version)."""
    return snapshot.updated_at or occurred_at


def can_fetch(provider: Provider) -> bool:
    """Whether ``provider`` implements ``fetch_subscription``."""
    return type(provider).fetch_subscription is not Provider.fetch_subscription


async def subscription_refs(
    conn: asyncpg.Connection | asyncpg.Pool, subs: Sequence[Subscription]
) -> list[SubscriptionRef]:
    """``subs`` as their provider plugins see them: THE builder of a ``SubscriptionRef``
    (operations, re-fetches, reconciliation). A fixed number of statements, whatever the
    number of subscriptions: one per table (customers, plans, provider customer ids)."""
    if not subs:
        return []
    customers = {
        c.id: c for c in await load_customers(conn, ids=list({s.customer_id for s in subs}))
    }
    plans = {p.id: p for p in await load_plans(conn, ids=list({s.plan_id for s in subs}))}
    known = await provider_customer_ids(conn, list({(s.customer_id, s.provider) for s in subs}))
    return [
        SubscriptionRef(
            subscription_id=str(sub.id),
            provider_subscription_id=sub.provider_subscription_id,
            customer=customer_info_of(
                customers[sub.customer_id], known.get((sub.customer_id, sub.provider))
            ),
            plan=plan_info(plans[sub.plan_id], sub.provider, sub.currency),
            quantity=sub.quantity,
            currency=sub.currency,
            current_period_end=sub.current_period_end,
        )
        for sub in subs
    ]


async def refresh_events(
    runtime: ServiceContext, provider: Provider, events: Sequence[BillingEvent]
) -> tuple[list[BillingEvent], dict[str, datetime]]:
    """``events`` with each snapshot that is not strictly newer than the state applied replaced
    by the provider's current state, and the versions those fetches supersede.

    Call it outside any transaction. Snapshots of subscriptions we do not hold yet, strictly
    newer ones, and those of providers without ``fetch_subscription`` pass unchanged. A
    provider failure propagates (a delivery is then retried later).
    """
    pairs = [
        (ev.subscription, version_of(ev.subscription, ev.occurred_at))
        if ev.subscription is not None
        else None
        for ev in events
    ]
    snapshots, refreshed = await _refresh(runtime, provider, pairs)
    out = [
        ev if snap is None or snap is ev.subscription else replace(ev, subscription=snap)
        for ev, snap in zip(events, snapshots, strict=True)
    ]
    return out, refreshed


async def refresh_snapshot(
    runtime: ServiceContext, provider: Provider, snapshot: SubscriptionSnapshot
) -> tuple[SubscriptionSnapshot, dict[str, datetime]]:
    """The same for the state a subscription operation answered with (its version is its
    ``updated_at``; without one it is applied as is, so nothing is re-fetched)."""
    [snap], refreshed = await _refresh(runtime, provider, [(snapshot, snapshot.updated_at)])
    assert snap is not None
    return snap, refreshed


async def _refresh(
    runtime: ServiceContext,
    provider: Provider,
    pairs: Sequence[tuple[SubscriptionSnapshot, datetime | None] | None],
) -> tuple[list[SubscriptionSnapshot | None], dict[str, datetime]]:
    found = [p[0] if p is not None else None for p in pairs]
    if not can_fetch(provider):
        return found, {}
    candidates = {p[0].provider_subscription_id for p in pairs if p is not None and p[1]}
    candidates.discard("")
    if not candidates:
        return found, {}
    rows = await runtime.db.fetch(
        "SELECT * FROM subscriptions WHERE provider = $1 AND provider_subscription_id = ANY($2)",
        provider.name,
        list(candidates),
    )
    held = {r["provider_subscription_id"]: subscription_from_row(r) for r in rows}
    fetched: dict[str, SubscriptionSnapshot | None] = {}
    refreshed: dict[str, datetime] = {}
    for index, pair in enumerate(pairs):
        if pair is None:
            continue
        snap, version = pair
        psid = snap.provider_subscription_id
        sub = held.get(psid)
        if (
            sub is None
            or sub.provider_updated_at is None
            or version is None
            or version > sub.provider_updated_at
        ):
            continue
        if await _same_state(runtime, provider.name, sub, snap):
            # Nothing to settle: applying it changes nothing (an echo of a state we hold).
            refreshed[psid] = sub.provider_updated_at
            continue
        if psid not in fetched:
            [ref] = await subscription_refs(runtime.db.pool, [sub])
            fetched[psid] = await provider.fetch_subscription(ref)
            log.info(
                "%s snapshot of %s from %s is not newer than %s: re-fetched",
                provider.name,
                sub.id,
                version.isoformat(),
                sub.provider_updated_at.isoformat(),
            )
        current = fetched[psid]
        if current is None:
            continue  # the provider has no such subscription: the engine decides
        refreshed[psid] = sub.provider_updated_at
        found[index] = current
    return found, refreshed


async def _same_state(
    runtime: ServiceContext, provider: str, sub: Subscription, snap: SubscriptionSnapshot
) -> bool:
    """Whether applying ``snap`` would leave ``sub`` as it is (the fields a snapshot sets)."""
    same = (
        str(snap.status) == sub.status
        and (snap.current_period_start or sub.current_period_start) == sub.current_period_start
        and (snap.current_period_end or sub.current_period_end) == sub.current_period_end
        and snap.trial_end == sub.trial_end
        and snap.cancel_at_period_end == sub.cancel_at_period_end
        and snap.canceled_at == sub.canceled_at
        and snap.ended_at == sub.ended_at
        and (snap.quantity or sub.quantity) == sub.quantity
    )
    if not same or not snap.plan_ref:
        return same
    found = await runtime.db.fetchval(
        "SELECT 1 FROM plan_provider_refs WHERE provider = $1 AND ref = $2 AND plan_id = $3",
        provider,
        snap.plan_ref,
        sub.plan_id,
    )
    return found is not None
