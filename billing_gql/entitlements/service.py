"""Entitlements (docs/api.md#entitlements): what a customer may use, derived from its grants.

Grants come from subscriptions in TRIALING, ACTIVE (also with a pending cancel) or PAST_DUE,
from paid ONE_TIME purchases until fully refunded, and from live provider grants (mapped by
the ``map_provider_grant`` hook when applied). A feature is enabled when any grant enables it;
limits add up; an unlimited (null) limit wins; quantity does not multiply limits. Unknown
customers and features give ``{enabled: false, limit: 0, used: 0, remaining: 0}``.

:func:`entitlement` is the hot path (the app calls it on every request): ONE indexed SQL
statement resolves the customer (by id or external id), sums its grants of the feature, and
says whether the feature is metered. Only a metered feature costs more: its meter's
aggregate, through the usage domain's :func:`~billing_gql.usage.aggregate.aggregate_many`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from billing_gql.core.usage import Period
from billing_gql.usage.aggregate import UsageItem, aggregate_many, calendar_month

__all__ = ["Entitlement", "entitlement", "entitlements"]

ZERO = Decimal(0)
Now = Callable[[], Awaitable[datetime]]


@dataclass(frozen=True)
class Entitlement:
    feature: str
    enabled: bool
    limit: Decimal | None
    """``None`` is unlimited."""
    used: Decimal
    remaining: Decimal | None
    """``None`` is unlimited."""
    period: Period | None = None
    """The period ``used`` covers (a metered feature that is granted), else ``None``: the
    current period of the newest live subscription granting the feature; with none (a
    provider grant or a ONE_TIME purchase only), the current UTC calendar month."""
    expires: datetime | None = field(default=None, compare=False)
    """When time alone may change this answer (billing time): the end of the period ``used``
    covers, or of the granting subscription's current period; ``None``: only a write can.
    The entitlement cache drops the answer at that moment."""

    @classmethod
    def none(cls, feature: str) -> Entitlement:
        """What an unknown customer or an ungranted feature gets."""
        return cls(feature, False, ZERO, ZERO, ZERO)


# Grants as rows (customer, feature, enabled, limit, period of the granting subscription).
_GRANTS = """
  SELECT s.customer_id, pf.feature, pf.enabled, pf.limit_value,
         s.current_period_start AS ps, s.current_period_end AS pe
    FROM subscriptions s JOIN plan_features pf ON pf.plan_id = s.plan_id {feature_sub}
   WHERE s.customer_id {customers} AND s.status IN ('TRIALING', 'ACTIVE', 'PAST_DUE')
  UNION ALL
  SELECT c.customer_id, pf.feature, pf.enabled, pf.limit_value, NULL, NULL
    FROM checkouts c JOIN plans p ON p.id = c.plan_id AND p.interval = 'ONE_TIME'
    JOIN plan_features pf ON pf.plan_id = c.plan_id {feature_sub}
   WHERE c.customer_id {customers} AND c.status = 'COMPLETED' AND c.purpose = 'new'
     AND (c.refunded_minor = 0 OR c.refunded_minor < c.amount_paid_minor)
  UNION ALL
  SELECT g.customer_id, g.feature, g.enabled, g.limit_value, NULL, NULL
    FROM provider_grant_features g
   WHERE g.customer_id {customers} {feature_grant}
"""

_AGGREGATES = """
  coalesce(bool_or(enabled), false) AS enabled,
  coalesce(bool_or(enabled AND limit_value IS NULL), false) AS unlimited,
  sum(limit_value) FILTER (WHERE enabled) AS limit_sum,
  (array_agg(ps ORDER BY ps DESC NULLS LAST) FILTER (WHERE enabled))[1] AS ps,
  (array_agg(pe ORDER BY ps DESC NULLS LAST) FILTER (WHERE enabled))[1] AS pe
"""


def _one(customer: str) -> str:
    """The single-feature statement; ``customer`` picks the customer by id or external id.

    Two statements rather than one ``CASE`` on which argument is set: a prepared statement's
    generic plan cannot use an index through such a ``CASE`` and would scan every customer.
    """
    return (
        f"WITH cust AS (SELECT id FROM customers WHERE {customer}), "  # noqa: S608
        "grants AS ("
        + _GRANTS.format(
            feature_sub="AND pf.feature = $2",
            customers="= (SELECT id FROM cust)",
            feature_grant="AND g.feature = $2",
        )
        + ") SELECT (SELECT id FROM cust) AS customer_id, "
        "(SELECT id FROM meters WHERE code = $2) AS meter_id, " + _AGGREGATES + " FROM grants"
    )


# Built once from constant fragments (no user input is ever formatted into SQL).
_ONE_BY_ID = _one("id = $1::uuid")
_ONE_BY_EXTERNAL_ID = _one("external_id = $1::text")

_MANY = (
    "WITH grants AS ("  # noqa: S608
    + _GRANTS.format(feature_sub="", customers="= ANY($1::uuid[])", feature_grant="")
    + ") SELECT customer_id, feature, m.id AS meter_id, "
    + _AGGREGATES
    + " FROM grants LEFT JOIN meters m ON m.code = grants.feature "
    "GROUP BY customer_id, feature, m.id ORDER BY customer_id, feature"
)


def _compose(
    feature: str,
    *,
    enabled: bool,
    unlimited: bool,
    limit_sum: Decimal | None,
    usage: tuple[Decimal, Period] | None,
    period_end: datetime | None = None,
) -> Entitlement:
    """``usage``: a metered feature's ``used`` and its period (see :func:`_metered`);
    ``period_end``: the granting subscription's current period end, if any."""
    if not enabled:
        return Entitlement.none(feature)
    used, period = usage if usage is not None else (ZERO, None)
    limit = None if unlimited else (limit_sum if limit_sum is not None else ZERO)
    remaining = None if limit is None else max(ZERO, limit - used)
    if usage is not None and limit is not None and used >= limit:
        enabled = False
    ends = [t for t in (period_end, period.end if period else None) if t is not None]
    return Entitlement(feature, enabled, limit, used, remaining, period, min(ends, default=None))


async def _metered(
    conn: asyncpg.Connection | asyncpg.Pool,
    rows: Sequence[tuple[UUID, str, UUID, datetime | None, datetime | None]],
    now: Now,
) -> dict[tuple[UUID, str], tuple[Decimal, Period]]:
    """Granted metered features' ``used`` and the period it covers, by (customer, feature):
    the meter's aggregate over the current period of the newest live subscription granting
    the feature (``rows`` carry it); with none (a provider grant or a ONE_TIME purchase only),
    the current UTC calendar month. One statement for all."""
    if not rows:
        return {}
    month: Period | None = None
    periods: list[Period] = []
    for _, _, _, period_start, period_end in rows:
        if period_start is None or period_end is None:
            if month is None:
                month = calendar_month(await now())
            periods.append(month)
        else:
            periods.append(Period(period_start, period_end))
    values = await aggregate_many(
        conn,
        [
            UsageItem(row[0], row[2], period.start, period.end)
            for row, period in zip(rows, periods, strict=True)
        ],
    )
    return {
        (row[0], row[1]): (value, period)
        for row, value, period in zip(rows, values, periods, strict=True)
    }


async def entitlement(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    feature: str,
    now: Now,
    customer_id: UUID | None = None,
    external_id: str | None = None,
) -> tuple[UUID | None, Entitlement]:
    """One customer's entitlement to ``feature`` (by our id, else the external id).

    :param now: the billing clock, read only for a metered feature outside any subscription
        period.
    :returns: the customer's id (``None`` when unknown) and the entitlement.
    """
    if customer_id is not None:
        row = await conn.fetchrow(_ONE_BY_ID, customer_id, feature)
    else:
        row = await conn.fetchrow(_ONE_BY_EXTERNAL_ID, external_id, feature)
    assert row is not None
    if row["customer_id"] is None:
        return None, Entitlement.none(feature)
    usage = None
    if row["meter_id"] is not None and row["enabled"]:
        found = await _metered(
            conn, [(row["customer_id"], feature, row["meter_id"], row["ps"], row["pe"])], now
        )
        usage = found[(row["customer_id"], feature)]
    return row["customer_id"], _compose(
        feature,
        enabled=row["enabled"],
        unlimited=row["unlimited"],
        limit_sum=row["limit_sum"],
        usage=usage,
        period_end=row["pe"],
    )


async def entitlements(
    conn: asyncpg.Connection | asyncpg.Pool, customer_ids: Sequence[UUID], *, now: Now
) -> dict[UUID, list[Entitlement]]:
    """Every granted feature of each customer (sorted by feature), in one statement plus one
    usage lookup for the metered ones."""
    rows = await conn.fetch(_MANY, list(customer_ids))
    metered_rows = [
        (r["customer_id"], r["feature"], r["meter_id"], r["ps"], r["pe"])
        for r in rows
        if r["meter_id"] is not None and r["enabled"]
    ]
    usage = await _metered(conn, metered_rows, now)
    out: dict[UUID, list[Entitlement]] = {cid: [] for cid in customer_ids}
    for r in rows:
        out.setdefault(r["customer_id"], []).append(
            _compose(
                r["feature"],
                enabled=r["enabled"],
                unlimited=r["unlimited"],
                limit_sum=r["limit_sum"],
                usage=usage.get((r["customer_id"], r["feature"])),
                period_end=r["pe"],
            )
        )
    return out
