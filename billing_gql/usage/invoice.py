"""The bill so far for a subscription's current period (``invoicePreview``).

Lines: the plan's price x quantity, one line per usage charge in the subscription's currency
(priced by :mod:`.pricing` over the period's aggregate), and the pending invoice items
(prorations the engine wrote, ``invoiced_at IS NULL``). Each line is rounded once; the subtotal
is their sum and, without taxes or discounts, the total equals it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from billing_gql.catalog.plans import load_plans
from billing_gql.core.catalog import Charge
from billing_gql.core.invoices import ITEM_LINE_KINDS, InvoiceLineKind
from billing_gql.core.usage import InvoiceLine, InvoicePreview, Period
from billing_gql.money import Money, exponent
from billing_gql.usage.aggregate import aggregate, calendar_month
from billing_gql.usage.meters import load_meters
from billing_gql.usage.pricing import billable_quantity, charge_amount

__all__ = ["SubscriptionHead", "invoice_preview", "load_subscription_head"]


@dataclass(frozen=True)
class SubscriptionHead:
    """The columns of a subscription an invoice preview needs."""

    id: UUID
    customer_id: UUID
    plan_id: UUID
    quantity: int
    currency: str
    status: str
    current_period_start: datetime | None
    current_period_end: datetime | None


async def load_subscription_head(
    conn: asyncpg.Connection | asyncpg.Pool, subscription_id: UUID
) -> SubscriptionHead | None:
    """The subscription ``subscription_id``, or ``None``."""
    row = await conn.fetchrow(
        "SELECT id, customer_id, plan_id, quantity, currency, status, current_period_start, "
        "current_period_end FROM subscriptions WHERE id = $1",
        subscription_id,
    )
    return SubscriptionHead(**dict(row)) if row is not None else None


async def invoice_preview(
    conn: asyncpg.Connection | asyncpg.Pool, sub: SubscriptionHead, now: datetime
) -> InvoicePreview:
    """Price ``sub``'s current period so far (the calendar month when it has no period)."""
    if sub.current_period_start is not None and sub.current_period_end is not None:
        period = Period(sub.current_period_start, sub.current_period_end)
    else:
        period = calendar_month(now)
    currency = sub.currency
    plan = (await load_plans(conn, ids=[sub.plan_id]))[0]
    lines: list[InvoiceLine] = []

    price = plan.price(currency)
    if price is not None:
        lines.append(
            InvoiceLine(
                description=plan.name,
                quantity=Decimal(sub.quantity),
                amount=Money(price.minor * sub.quantity, currency),
                kind=InvoiceLineKind.ONE_TIME
                if plan.interval == "ONE_TIME"
                else InvoiceLineKind.PLAN,
                unit_amount_minor=price.minor,
                period_start=period.start,
                period_end=period.end,
            )
        )

    # Charges in another currency belong to subscriptions in that currency.
    charges = [c for c in plan.charges if c.currency == currency]
    if charges:
        meters = {m.id: m for m in await load_meters(conn, ids=[c.meter_id for c in charges])}
        totals = await aggregate(
            conn, sub.customer_id, list(meters.values()), period.start, period.end
        )
        for charge in charges:
            meter = meters[charge.meter_id]
            quantity = billable_quantity(totals[meter.id], charge)
            lines.append(
                InvoiceLine(
                    description=meter.name,
                    quantity=quantity,
                    amount=Money(charge_amount(charge, quantity), currency),
                    kind=InvoiceLineKind.USAGE,
                    unit_amount_minor=_unit_minor(charge),
                    period_start=period.start,
                    period_end=period.end,
                )
            )

    items = await conn.fetch(
        "SELECT kind, description, quantity, amount_minor, period_start, period_end "
        "FROM invoice_items "
        "WHERE subscription_id = $1 AND invoiced_at IS NULL AND currency = $2 "
        "ORDER BY created_at, id",
        sub.id,
        currency,
    )
    lines.extend(
        InvoiceLine(
            description=r["description"],
            quantity=r["quantity"],
            amount=Money(r["amount_minor"], currency),
            kind=ITEM_LINE_KINDS.get(r["kind"], InvoiceLineKind.ONE_TIME),
            period_start=r["period_start"],
            period_end=r["period_end"],
        )
        for r in items
    )
    subtotal = Money(sum(line.amount.minor for line in lines), currency)
    return InvoicePreview(
        subscription_id=sub.id,
        currency=currency,
        period=period,
        lines=tuple(lines),
        subtotal=subtotal,
        total=subtotal,
    )


def _unit_minor(charge: Charge) -> int | None:
    """A per-unit charge's unit price in whole minor units, when it is one."""
    if charge.model != "PER_UNIT" or charge.unit_amount is None:
        return None
    minor = charge.unit_amount.scaleb(exponent(charge.currency))
    if minor != minor.to_integral_value():
        return None  # finer than the currency's minor unit
    return int(minor)
