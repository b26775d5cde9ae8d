"""Usage billed in arrears for push subscriptions (manual, bank transfers).

When a period of a push subscription whose plan has usage charges closes (its end passed on
the billing clock; the worker's ``close_usage_periods`` sweep runs before the period-end sweeps
move the subscription on), its usage is priced per charge (the meter's aggregate over the
period, less the included quantity, by the charge's model: :mod:`billing_gql.usage.pricing`)
and each charge becomes a pending usage item:

- carried by the renewal checkout of the period that follows, when that one is still OPEN
  (its amount grows, its invoice is reissued with the USAGE lines, the bank-transfer
  instructions ask for the new amount);
- otherwise asked for by a checkout of its own (``purpose`` invoice) with its own invoice.

Exactly once per period: ``usage_period_closes`` has one row per (subscription, period start).
What each charge billed is kept in ``usage_billed``; at every close the earlier closed periods
are priced again, and usage recorded late for them (allowed by ``recordUsage``) is billed as
a "late usage" item: the recomputed amount less what was billed, so never lost and never
counted twice.
"""

# The SQL below interpolates only the module's batch size.
# ruff: noqa: S608

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from billing_gql.catalog.plans import load_plans
from billing_gql.checkout.push_renewals import create_invoice_checkout
from billing_gql.context import ServiceContext
from billing_gql.core.catalog import Charge
from billing_gql.core.checkout import checkout_from_row
from billing_gql.core.events import checkout_event
from billing_gql.core.subscriptions import Subscription, subscription_from_row
from billing_gql.invoices.service import sync_checkout_invoice
from billing_gql.plugins.types import DomainEvent
from billing_gql.store.checkouts_sql import set_checkout_amount
from billing_gql.store.invoice_items_sql import carry_items_on_checkout, record_usage_item
from billing_gql.store.invoices_sql import add_usage_billed, close_usage_period
from billing_gql.usage.aggregate import UsageItem, aggregate_many
from billing_gql.usage.meters import load_meters
from billing_gql.usage.pricing import billable_quantity, charge_amount

__all__ = ["close_usage_period_of", "close_usage_periods"]

log = logging.getLogger(__name__)

BATCH = 500


@dataclass(frozen=True)
class _Closed:
    start: datetime
    end: datetime
    plan_id: UUID


def _push(runtime: ServiceContext) -> list[str]:
    return [name for name, entry in runtime.providers.items() if not entry.cls.charges_renewals]


async def close_usage_periods(runtime: ServiceContext, now: datetime) -> int:
    """Sweep: bill the usage of every push subscription's period that ended by ``now``."""
    push = _push(runtime)
    if not push:
        return 0
    due = await runtime.db.fetch(
        f"SELECT s.id FROM subscriptions s WHERE s.provider = ANY($2) "
        f"AND s.status IN ('ACTIVE', 'PAST_DUE') AND s.current_period_start IS NOT NULL "
        f"AND s.current_period_end <= $1 "
        f"AND EXISTS (SELECT 1 FROM usage_charges c WHERE c.plan_id = s.plan_id "
        f"AND c.currency = s.currency) "
        f"AND NOT EXISTS (SELECT 1 FROM usage_period_closes u WHERE u.subscription_id = s.id "
        f"AND u.period_start = s.current_period_start) "
        f"ORDER BY s.current_period_end LIMIT {BATCH}",
        now,
        push,
    )
    closed = 0
    for row in due:
        try:
            if await close_usage_period_of(runtime, row["id"], now):
                closed += 1
        except Exception:
            # Kept for the next tick; one subscription's failure never blocks the others.
            log.exception("billing the usage of subscription %s failed", row["id"])
    return closed


async def close_usage_period_of(
    runtime: ServiceContext, subscription_id: UUID, now: datetime
) -> bool:
    """Bill the usage of ``subscription_id``'s current period, which ended by ``now`` (once);
    False when it was billed already or has not ended."""
    events: list[DomainEvent] = []
    async with runtime.db.transaction() as conn:
        # The lock order of the engine: the checkout, then the subscription.
        renewal = await conn.fetchrow(
            "SELECT * FROM checkouts WHERE id = (SELECT id FROM checkouts "
            "WHERE subscription_id = $1 AND purpose = 'renewal' AND status = 'OPEN' "
            "ORDER BY renews_from DESC LIMIT 1) FOR UPDATE",
            subscription_id,
        )
        row = await conn.fetchrow(
            "SELECT * FROM subscriptions WHERE id = $1 FOR UPDATE", subscription_id
        )
        sub = subscription_from_row(row)
        start, end = sub.current_period_start, sub.current_period_end
        if start is None or end is None or end > now:
            return False
        if not await close_usage_period(
            conn, sub.id, start=start, end=end, plan_id=sub.plan_id, now=now
        ):
            return False
        items = await _bill(conn, sub, start, now)
        owed = sum(amount for _, amount in items)
        if owed <= 0:
            # Nothing (or only a credit) to ask for: it waits for the next checkout.
            return True
        if renewal is not None and renewal["status"] == "OPEN" and renewal["renews_from"] == end:
            await carry_items_on_checkout(conn, renewal["id"], [i for i, _ in items])
            updated = checkout_from_row(
                await set_checkout_amount(conn, renewal["id"], renewal["amount_minor"] + owed, now)
            )
            events.append(checkout_event("checkout.updated", updated, now))
            events += await sync_checkout_invoice(
                conn, runtime.settings.invoices.prefix, updated, now
            )
            renewal_carries = True
        else:
            renewal_carries = False
    for event in events:
        await runtime.emit(event)
    if not renewal_carries:
        result = await create_invoice_checkout(runtime, sub.id)
        if result is not None and result.error is not None:
            log.warning(
                "the usage checkout of subscription %s failed at the provider (%s): its usage "
                "waits for the next checkout",
                sub.id,
                result.error.code,
            )
    return True


async def _bill(
    conn: asyncpg.Connection, sub: Subscription, closing: datetime, now: datetime
) -> list[tuple[UUID, int]]:
    """Record the usage items of the period starting at ``closing`` (just closed) and the late
    usage of the periods closed before; their (item id, amount)."""
    closes = [
        _Closed(r["period_start"], r["period_end"], r["plan_id"])
        for r in await conn.fetch(
            "SELECT period_start, period_end, plan_id FROM usage_period_closes "
            "WHERE subscription_id = $1 ORDER BY period_start",
            sub.id,
        )
    ]
    plans = {p.id: p for p in await load_plans(conn, ids=list({c.plan_id for c in closes}))}
    pairs: list[tuple[_Closed, Charge]] = [
        (close, charge)
        for close in closes
        for charge in plans[close.plan_id].charges
        if charge.currency == sub.currency
    ]
    billed = {
        (r["period_start"], r["meter_id"]): (r["quantity"], r["amount_minor"])
        for r in await conn.fetch(
            "SELECT period_start, meter_id, quantity, amount_minor FROM usage_billed "
            "WHERE subscription_id = $1",
            sub.id,
        )
    }
    meters = {m.id: m for m in await load_meters(conn, ids=list({c.meter_id for _, c in pairs}))}
    values = await aggregate_many(
        conn, [UsageItem(sub.customer_id, c.meter_id, p.start, p.end) for p, c in pairs]
    )
    items: list[tuple[UUID, int]] = []
    for (close, charge), value in zip(pairs, values, strict=True):
        quantity = billable_quantity(value, charge)
        amount = charge_amount(charge, quantity)
        before_quantity, before_amount = billed.get((close.start, charge.meter_id), (Decimal(0), 0))
        current = close.start == closing
        if not current and amount == before_amount:
            continue
        await add_usage_billed(
            conn,
            sub.id,
            close.start,
            charge.meter_id,
            quantity=quantity,
            amount_minor=amount,
            now=now,
        )
        if current and quantity == 0 and amount == 0:
            continue
        name = meters[charge.meter_id].name
        description = (
            name
            if current
            else f"Late usage: {name} ({close.start:%Y-%m-%d} to {close.end:%Y-%m-%d})"
        )
        item_id = await record_usage_item(
            conn,
            sub.id,
            description=description,
            currency=sub.currency,
            amount_minor=amount - before_amount,
            quantity=quantity - before_quantity,
            period_start=close.start,
            period_end=close.end,
            now=now,
        )
        items.append((item_id, amount - before_amount))
    return items
