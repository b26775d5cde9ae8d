"""Catalog use cases: create, update and archive plans, and grant access to private ones.

The parts live in the package's other modules: the drafts and their validation
(:mod:`.validation`), provider references (:mod:`.provider_refs`), writing a plan's parts
(:mod:`.persistence`) and reading plans (:mod:`.plans`). ``load_plans``, ``get_plan`` and
``list_plans`` are re-exported here for the many callers that read plans next to these use
cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import asyncpg

from billing_gql.catalog.persistence import write_charges, write_features, write_prices
from billing_gql.catalog.plans import get_plan, list_plans, load_plans
from billing_gql.catalog.provider_refs import (
    ProviderRefDraft,
    validate_provider_refs,
    write_provider_refs,
)
from billing_gql.catalog.validation import (
    ChargeDraft,
    FeatureDraft,
    PlanChanges,
    PlanDraft,
    PriceDraft,
    TierDraft,
    meter_ids,
    validate_charges,
    validate_features,
    validate_prices,
    validate_shape,
)
from billing_gql.core.catalog import Charge, Feature, Plan, ProviderRef
from billing_gql.db.database import Database
from billing_gql.errors import UserInputError
from billing_gql.money import Money, shown
from billing_gql.validation import Omitted, Problems

T = TypeVar("T")

__all__ = [
    "ChargeDraft",
    "FeatureDraft",
    "PlanChanges",
    "PlanDraft",
    "PriceDraft",
    "ProviderRefDraft",
    "TierDraft",
    "archive_plan",
    "create_plan",
    "get_plan",
    "list_plans",
    "load_plans",
    "set_plan_access",
    "update_plan",
]


async def create_plan(db: Database, now: datetime, draft: PlanDraft) -> Plan:
    """Validate everything, then insert the plan and its parts in one transaction."""
    p = Problems()
    p.code(draft.code, "code", "code")
    p.text(draft.name, "name", "name")
    validate_shape(p, draft.interval, draft.interval_count, draft.trial_days)
    prices = validate_prices(p, draft.prices)
    features = validate_features(p, draft.features)
    refs = validate_provider_refs(p, draft.provider_refs)
    async with db.transaction() as conn:
        charges = validate_charges(p, draft.charges, await meter_ids(conn, draft.charges))
        p.raise_if_any()
        try:
            plan_id = await conn.fetchval(
                "INSERT INTO plans (code, name, description, interval, interval_count, "
                "trial_days, archived, private, created_at, updated_at) "
                "VALUES ($1,$2,$3,$4,$5,$6,false,$8,$7,$7) RETURNING id",
                draft.code,
                draft.name.strip(),
                draft.description,
                draft.interval,
                draft.interval_count,
                draft.trial_days,
                now,
                draft.private,
            )
        except asyncpg.UniqueViolationError:
            raise UserInputError(
                "ALREADY_EXISTS", f"a plan with code {shown(draft.code)} exists", ["code"]
            ) from None
        await _write_parts(conn, plan_id, _Parts(prices, features, charges, refs))
        return (await load_plans(conn, ids=[plan_id]))[0]


async def _has_subscribers(conn: asyncpg.Connection, plan_id: UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE plan_id = $1 OR pending_plan_id = $1)"
            " OR EXISTS (SELECT 1 FROM checkouts WHERE plan_id = $1 AND status = 'COMPLETED')",
            plan_id,
        )
    )


@dataclass(frozen=True)
class _Fields:
    """A plan's own columns after an update."""

    name: str
    description: str | None
    trial_days: int
    interval: str
    interval_count: int
    private: bool


@dataclass(frozen=True)
class _Parts:
    """A plan's parts to write; ``None``: keep what is stored."""

    prices: list[Money] | None = None
    features: list[Feature] | None = None
    charges: list[Charge] | None = None
    refs: list[ProviderRef] | None = None


def _kept(change: T | Omitted, stored: T) -> T:
    return stored if isinstance(change, Omitted) else change


def _updated_fields(p: Problems, row: asyncpg.Record, changes: PlanChanges) -> _Fields:
    """The plan's columns with ``changes`` applied, the changed name and the shape checked."""
    name = row["name"]
    if not isinstance(changes.name, Omitted):
        name = p.text(changes.name, "name", "name")
    fields = _Fields(
        name=name,
        description=_kept(changes.description, row["description"]),
        trial_days=_kept(changes.trial_days, row["trial_days"]),
        interval=_kept(changes.interval, row["interval"]),
        interval_count=_kept(changes.interval_count, row["interval_count"]),
        private=_kept(changes.private, row["private"]),
    )
    validate_shape(p, fields.interval, fields.interval_count, fields.trial_days)
    return fields


async def _updated_parts(p: Problems, conn: asyncpg.Connection, changes: PlanChanges) -> _Parts:
    """The parts ``changes`` replaces, validated (in the order problems are reported)."""
    features = None
    if not isinstance(changes.features, Omitted):
        features = validate_features(p, changes.features)
    refs = None
    if not isinstance(changes.provider_refs, Omitted):
        refs = validate_provider_refs(p, changes.provider_refs)
    prices = None
    if not isinstance(changes.prices, Omitted):
        prices = validate_prices(p, changes.prices)
    charges = None
    if not isinstance(changes.charges, Omitted):
        charges = validate_charges(p, changes.charges, await meter_ids(conn, changes.charges))
    return _Parts(prices=prices, features=features, charges=charges, refs=refs)


async def _write_parts(conn: asyncpg.Connection, plan_id: UUID, parts: _Parts) -> None:
    if parts.prices is not None:
        await write_prices(conn, plan_id, parts.prices)
    if parts.features is not None:
        await write_features(conn, plan_id, parts.features)
    if parts.charges is not None:
        await write_charges(conn, plan_id, parts.charges)
    if parts.refs is not None:
        await write_provider_refs(conn, plan_id, parts.refs)


async def update_plan(db: Database, now: datetime, changes: PlanChanges) -> Plan:
    """Change what may change; prices, interval and charges only while nobody subscribed."""
    p = Problems()
    async with db.transaction() as conn:
        row = await conn.fetchrow("SELECT * FROM plans WHERE code = $1 FOR UPDATE", changes.code)
        if row is None:
            raise UserInputError("NOT_FOUND", f"no plan {shown(changes.code)}", ["code"])
        plan_id: UUID = row["id"]
        fields = _updated_fields(p, row, changes)
        parts = await _updated_parts(p, conn, changes)
        p.raise_if_any()
        frozen_change = (
            parts.prices is not None
            or parts.charges is not None
            or fields.interval != row["interval"]
            or fields.interval_count != row["interval_count"]
        )
        if frozen_change and await _has_subscribers(conn, plan_id):
            raise UserInputError(
                "INVALID_STATE",
                "prices, interval and charges cannot change once anyone subscribed; "
                "create a new plan",
            )
        await conn.execute(
            "UPDATE plans SET name=$2, description=$3, trial_days=$4, interval=$5, "
            "interval_count=$6, updated_at=$7, private=$8 WHERE id=$1",
            plan_id,
            fields.name,
            fields.description,
            fields.trial_days,
            fields.interval,
            fields.interval_count,
            now,
            fields.private,
        )
        await _write_parts(conn, plan_id, parts)
        return (await load_plans(conn, ids=[plan_id]))[0]


async def archive_plan(db: Database, now: datetime, code: str) -> Plan:
    """Hide a plan from new checkouts; existing subscriptions keep it. Idempotent."""
    async with db.transaction() as conn:
        plan_id = await conn.fetchval(
            "UPDATE plans SET archived = true, updated_at = CASE WHEN archived THEN updated_at "
            "ELSE $2 END WHERE code = $1 RETURNING id",
            code,
            now,
        )
        if plan_id is None:
            raise UserInputError("NOT_FOUND", f"no plan {shown(code)}", ["code"])
        return (await load_plans(conn, ids=[plan_id]))[0]


async def set_plan_access(
    db: Database, now: datetime, code: str, customer_id: UUID | None, *, granted: bool
) -> Plan:
    """Grant (or revoke) a customer's access to buy a private plan. Idempotent.

    :raises UserInputError: NOT_FOUND (plan or customer).
    """
    async with db.transaction() as conn:
        plan_id = await conn.fetchval("SELECT id FROM plans WHERE code = $1", code)
        p = Problems()
        if plan_id is None:
            p.add("NOT_FOUND", f"no plan {shown(code)}", "planCode")
        known = customer_id is not None and await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM customers WHERE id = $1)", customer_id
        )
        if not known:
            p.add("NOT_FOUND", "no such customer", "customerId")
        p.raise_if_any()
        if granted:
            await conn.execute(
                "INSERT INTO plan_access (plan_id, customer_id, created_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (plan_id, customer_id) DO NOTHING",
                plan_id,
                customer_id,
                now,
            )
        else:
            await conn.execute(
                "DELETE FROM plan_access WHERE plan_id = $1 AND customer_id = $2",
                plan_id,
                customer_id,
            )
        return (await load_plans(conn, ids=[plan_id]))[0]
