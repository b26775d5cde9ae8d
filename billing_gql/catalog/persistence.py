"""Plan persistence: writing a plan's parts (prices, features, usage charges).

Each writer replaces the part whole, inside the caller's transaction.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg

from billing_gql.core.catalog import Charge, Feature, ProviderRef, Tier
from billing_gql.money import Money

__all__ = ["write_charges", "write_features", "write_prices"]


async def write_prices(conn: asyncpg.Connection, plan_id: UUID, prices: list[Money]) -> None:
    await conn.execute("DELETE FROM plan_prices WHERE plan_id = $1", plan_id)
    await conn.executemany(
        "INSERT INTO plan_prices (plan_id, currency, amount_minor, position) VALUES ($1,$2,$3,$4)",
        [(plan_id, m.currency, m.minor, i) for i, m in enumerate(prices)],
    )


async def write_features(conn: asyncpg.Connection, plan_id: UUID, features: list[Feature]) -> None:
    await conn.execute("DELETE FROM plan_features WHERE plan_id = $1", plan_id)
    await conn.executemany(
        "INSERT INTO plan_features (plan_id, feature, enabled, limit_value, position) "
        "VALUES ($1,$2,$3,$4,$5)",
        [(plan_id, f.feature, f.enabled, f.limit, i) for i, f in enumerate(features)],
    )


def _tiers_json(tiers: tuple[Tier, ...] | None) -> list[dict[str, str | None]] | None:
    if tiers is None:
        return None
    return [
        {
            "up_to": str(t.up_to) if t.up_to is not None else None,
            "unit_amount": str(t.unit_amount),
            "flat_amount": str(t.flat_amount),
        }
        for t in tiers
    ]


def _refs_json(refs: tuple[ProviderRef, ...]) -> list[dict[str, str | None]]:
    return [{"provider": r.provider, "ref": r.ref, "currency": r.currency} for r in refs]


async def write_charges(conn: asyncpg.Connection, plan_id: UUID, charges: list[Charge]) -> None:
    await conn.execute("DELETE FROM usage_charges WHERE plan_id = $1", plan_id)
    await conn.executemany(
        "INSERT INTO usage_charges (plan_id, meter_id, model, currency, unit_amount, tiers, "
        "package_size, included_quantity, position, provider_refs) "
        "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        [
            (
                plan_id,
                c.meter_id,
                c.model,
                c.currency,
                c.unit_amount,
                _tiers_json(c.tiers),
                c.package_size,
                c.included_quantity,
                i,
                _refs_json(c.provider_refs),
            )
            for i, c in enumerate(charges)
        ],
    )
