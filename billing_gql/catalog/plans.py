"""Reading plans: each with its prices, features, usage charges and provider references."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.core.catalog import Charge, Feature, Plan, ProviderRef, Tier
from billing_gql.db.database import Database
from billing_gql.money import Money

__all__ = ["get_plan", "list_plans", "load_plans"]


def _tiers_from_json(raw: Any) -> tuple[Tier, ...] | None:
    if raw is None:
        return None
    return tuple(
        Tier(
            up_to=Decimal(t["up_to"]) if t.get("up_to") is not None else None,
            unit_amount=Decimal(t["unit_amount"]),
            flat_amount=Decimal(t.get("flat_amount") or "0"),
        )
        for t in raw
    )


async def load_plans(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    ids: Sequence[UUID] | None = None,
    codes: Sequence[str] | None = None,
    include_archived: bool = True,
    include_private: bool = True,
    private_for: UUID | None = None,
) -> list[Plan]:
    """Plans with all their parts, in five queries whatever their number.

    :param include_private: with ``False``, private plans only where ``private_for`` (a
        customer) was granted access to them.
    """
    rows = await _plan_rows(
        conn,
        ids=ids,
        codes=codes,
        include_archived=include_archived,
        include_private=include_private,
        private_for=private_for,
    )
    if not rows:
        return []
    by_plan = await _parts_by_plan(conn, [r["id"] for r in rows])
    return [_plan(r, by_plan[r["id"]]) for r in rows]


async def _plan_rows(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    ids: Sequence[UUID] | None,
    codes: Sequence[str] | None,
    include_archived: bool,
    include_private: bool,
    private_for: UUID | None,
) -> list[asyncpg.Record]:
    """The ``plans`` rows :func:`load_plans` asks for, oldest first."""
    where = [
        "($1::uuid[] IS NULL OR id = ANY($1::uuid[]))",
        "($2::text[] IS NULL OR code = ANY($2::text[]))",
    ]
    if not include_archived:
        where.append("NOT archived")
    if not include_private:
        where.append(
            "(NOT private OR EXISTS (SELECT 1 FROM plan_access a WHERE a.plan_id = plans.id "
            "AND a.customer_id = $3))"
        )
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT * FROM plans WHERE {' AND '.join(where)} ORDER BY created_at, code",  # noqa: S608
        list(ids) if ids is not None else None,
        list(codes) if codes is not None else None,
        *([private_for] if not include_private else []),
    )
    return rows


async def _parts_by_plan(
    conn: asyncpg.Connection | asyncpg.Pool, plan_ids: list[UUID]
) -> dict[UUID, dict[str, list[Any]]]:
    """Each plan's prices, features, charges and provider references (one query each)."""
    prices = await conn.fetch(
        "SELECT plan_id, currency, amount_minor FROM plan_prices WHERE plan_id = ANY($1) "
        "ORDER BY position",
        plan_ids,
    )
    features = await conn.fetch(
        "SELECT plan_id, feature, enabled, limit_value FROM plan_features WHERE plan_id = ANY($1) "
        "ORDER BY position",
        plan_ids,
    )
    charges = await conn.fetch(
        "SELECT c.*, m.code AS meter_code, (SELECT coalesce(jsonb_agg(jsonb_build_object("
        "'provider', r.provider, 'ref', r.ref, 'currency', r.currency)), '[]'::jsonb) "
        "FROM meter_provider_refs r WHERE r.meter_id = c.meter_id) AS meter_refs "
        "FROM usage_charges c JOIN meters m ON m.id = c.meter_id "
        "WHERE c.plan_id = ANY($1) ORDER BY c.position",
        plan_ids,
    )
    refs = await conn.fetch(
        "SELECT plan_id, provider, ref, currency FROM plan_provider_refs WHERE plan_id = ANY($1) "
        "ORDER BY provider, currency NULLS LAST",
        plan_ids,
    )
    by_plan: dict[UUID, dict[str, list[Any]]] = {
        pid: {"prices": [], "features": [], "charges": [], "refs": []} for pid in plan_ids
    }
    for r in prices:
        by_plan[r["plan_id"]]["prices"].append(Money(r["amount_minor"], r["currency"]))
    for r in features:
        by_plan[r["plan_id"]]["features"].append(
            Feature(r["feature"], r["enabled"], r["limit_value"])
        )
    for r in charges:
        by_plan[r["plan_id"]]["charges"].append(_charge(r))
    for r in refs:
        by_plan[r["plan_id"]]["refs"].append(ProviderRef(r["provider"], r["ref"], r["currency"]))
    return by_plan


def _charge(r: asyncpg.Record) -> Charge:
    return Charge(
        meter_id=r["meter_id"],
        meter_code=r["meter_code"],
        model=r["model"],
        currency=r["currency"],
        unit_amount=r["unit_amount"],
        tiers=_tiers_from_json(r["tiers"]),
        package_size=r["package_size"],
        included_quantity=r["included_quantity"],
        provider_refs=_refs(r["provider_refs"]),
        meter_refs=_refs(r["meter_refs"]),
    )


def _refs(raw: Any) -> tuple[ProviderRef, ...]:
    return tuple(ProviderRef(x["provider"], x["ref"], x.get("currency")) for x in raw or ())


def _plan(r: asyncpg.Record, parts: dict[str, list[Any]]) -> Plan:
    return Plan(
        id=r["id"],
        code=r["code"],
        name=r["name"],
        description=r["description"],
        interval=r["interval"],
        interval_count=r["interval_count"],
        trial_days=r["trial_days"],
        archived=r["archived"],
        prices=tuple(parts["prices"]),
        features=tuple(parts["features"]),
        charges=tuple(parts["charges"]),
        provider_refs=tuple(parts["refs"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        private=r["private"],
    )


async def get_plan(
    db: Database, code: str, *, include_hidden: bool = True, customer_id: UUID | None = None
) -> Plan | None:
    """One plan by code; ``include_hidden=False`` (a non-admin asks): not an archived one, nor
    a private one ``customer_id`` was not granted."""
    plans = await load_plans(
        db.pool,
        codes=[code],
        include_archived=include_hidden,
        include_private=include_hidden,
        private_for=customer_id,
    )
    return plans[0] if plans else None


async def list_plans(
    db: Database,
    *,
    include_archived: bool = False,
    include_private: bool = True,
    customer_id: UUID | None = None,
) -> list[Plan]:
    return await load_plans(
        db.pool,
        include_archived=include_archived,
        include_private=include_private,
        private_for=customer_id,
    )
