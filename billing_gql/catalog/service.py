"""Catalog use cases: create, update, archive and read plans."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.core.catalog import Charge, Feature, Plan, ProviderRef, Tier
from billing_gql.db.database import Database
from billing_gql.errors import UserInputError
from billing_gql.money import Money
from billing_gql.validation import OMITTED, Omitted, Problems

INTERVALS = ("DAY", "WEEK", "MONTH", "YEAR", "ONE_TIME")
CHARGE_MODELS = ("PER_UNIT", "GRADUATED", "VOLUME", "PACKAGE")


@dataclass(frozen=True)
class PriceDraft:
    currency: str
    amount: Any
    """A decimal string in major units."""


@dataclass(frozen=True)
class FeatureDraft:
    feature: str
    enabled: bool = True
    limit: Any = None


@dataclass(frozen=True)
class TierDraft:
    up_to: Any
    unit_amount: Any
    flat_amount: Any = "0"


@dataclass(frozen=True)
class ChargeDraft:
    meter: str
    model: str
    currency: str
    unit_amount: Any = None
    tiers: Sequence[TierDraft] | None = None
    package_size: int | None = None
    included_quantity: Any = "0"


@dataclass(frozen=True)
class ProviderRefDraft:
    provider: str
    ref: str
    currency: str | None = None


@dataclass(frozen=True)
class PlanDraft:
    code: str
    name: str
    interval: str
    prices: Sequence[PriceDraft]
    description: str | None = None
    interval_count: int = 1
    trial_days: int = 0
    features: Sequence[FeatureDraft] = ()
    charges: Sequence[ChargeDraft] = ()
    provider_refs: Sequence[ProviderRefDraft] = ()
    private: bool = False


@dataclass(frozen=True)
class PlanChanges:
    """``OMITTED`` fields keep their value."""

    code: str
    name: str | Omitted = OMITTED
    description: str | Omitted | None = OMITTED
    features: Sequence[FeatureDraft] | Omitted = OMITTED
    provider_refs: Sequence[ProviderRefDraft] | Omitted = OMITTED
    trial_days: int | Omitted = OMITTED
    prices: Sequence[PriceDraft] | Omitted = OMITTED
    interval: str | Omitted = OMITTED
    interval_count: int | Omitted = OMITTED
    charges: Sequence[ChargeDraft] | Omitted = OMITTED
    private: bool | Omitted = OMITTED


# -- validation -------------------------------------------------------------------------------


def _prices(p: Problems, drafts: Sequence[PriceDraft]) -> list[Money]:
    out: list[Money] = []
    if not drafts:
        p.add("INVALID_INPUT", "a plan needs at least one price", "prices")
    seen: set[str] = set()
    for i, draft in enumerate(drafts):
        currency = p.currency(draft.currency, "prices", i, "currency")
        if currency in seen:
            p.add("INVALID_INPUT", f"two prices in {currency}", "prices", i, "currency")
        seen.add(currency)
        before = len(p.errors)
        minor = p.amount(draft.amount, currency, "prices", i, "amount")
        if len(p.errors) == before:
            out.append(Money(minor, currency))
    return out


def _features(p: Problems, drafts: Sequence[FeatureDraft]) -> list[Feature]:
    out: list[Feature] = []
    seen: set[str] = set()
    for i, draft in enumerate(drafts):
        code = p.code(draft.feature, "feature", "features", i, "feature")
        if code in seen:
            p.add("INVALID_INPUT", f"feature {code!r} is listed twice", "features", i, "feature")
        seen.add(code)
        limit = None
        if draft.limit is not None:
            limit = p.decimal(draft.limit, "limit", "features", i, "limit")
        out.append(Feature(code, bool(draft.enabled), limit))
    return out


def _tiers(
    p: Problems, drafts: Sequence[TierDraft] | None, currency: str, *path: str | int
) -> tuple[Tier, ...]:
    if not drafts:
        p.add("INVALID_INPUT", "this model needs tiers", *path)
        return ()
    tiers: list[Tier] = []
    previous: Decimal | None = None
    for i, draft in enumerate(drafts):
        up_to = None
        if draft.up_to is not None:
            up_to = p.decimal(draft.up_to, "upTo", *path, i, "upTo")
            if previous is not None and up_to <= previous:
                p.add("INVALID_INPUT", "tiers' upTo must increase", *path, i, "upTo")
            previous = up_to
        elif i != len(drafts) - 1:
            p.add("INVALID_INPUT", "only the last tier may have no upTo", *path, i, "upTo")
        unit = p.price(draft.unit_amount, "unitAmount", *path, i, "unitAmount", currency=currency)
        flat = p.price(
            draft.flat_amount if draft.flat_amount is not None else "0",
            "flatAmount",
            *path,
            i,
            "flatAmount",
            currency=currency,
        )
        tiers.append(Tier(up_to, unit, flat))
    if drafts[-1].up_to is not None:
        p.add("INVALID_INPUT", "the last tier must have no upTo (it takes the rest)", *path)
    return tuple(tiers)


def _charges(p: Problems, drafts: Sequence[ChargeDraft], meters: dict[str, UUID]) -> list[Charge]:
    out: list[Charge] = []
    for i, d in enumerate(drafts):
        path: tuple[str | int, ...] = ("charges", i)
        meter_id = meters.get(d.meter)
        if meter_id is None:
            p.add("UNKNOWN_METER", f"no meter {d.meter!r}", *path, "meter")
        if d.model not in CHARGE_MODELS:
            p.add("INVALID_INPUT", f"unknown charge model {d.model!r}", *path, "model")
        currency = p.currency(d.currency, *path, "currency")
        unit = None
        tiers = None
        if d.model in ("PER_UNIT", "PACKAGE"):
            if d.unit_amount is None:
                p.add("INVALID_INPUT", f"{d.model} needs unitAmount", *path, "unitAmount")
            else:
                unit = p.price(d.unit_amount, "unitAmount", *path, "unitAmount", currency=currency)
            if d.tiers:
                p.add("INVALID_INPUT", f"{d.model} takes no tiers", *path, "tiers")
        elif d.model in ("GRADUATED", "VOLUME"):
            tiers = _tiers(p, d.tiers, currency, *path, "tiers")
            if d.unit_amount is not None:
                p.add(
                    "INVALID_INPUT",
                    f"{d.model} prices by tiers, not unitAmount",
                    *path,
                    "unitAmount",
                )
        package_size = None
        if d.model == "PACKAGE":
            if d.package_size is None or d.package_size < 1:
                p.add(
                    "INVALID_INPUT",
                    "PACKAGE needs a packageSize of at least 1",
                    *path,
                    "packageSize",
                )
            package_size = d.package_size
        elif d.package_size is not None:
            p.add("INVALID_INPUT", "only PACKAGE takes a packageSize", *path, "packageSize")
        included = p.decimal(
            d.included_quantity if d.included_quantity is not None else "0",
            "includedQuantity",
            *path,
            "includedQuantity",
        )
        out.append(
            Charge(
                meter_id=meter_id or UUID(int=0),
                meter_code=d.meter,
                model=d.model,
                currency=currency,
                unit_amount=unit,
                tiers=tiers,
                package_size=package_size,
                included_quantity=included,
            )
        )
    return out


def validate_provider_refs(p: Problems, drafts: Sequence[ProviderRefDraft]) -> list[ProviderRef]:
    out: list[ProviderRef] = []
    seen: set[tuple[str, str | None]] = set()
    for i, d in enumerate(drafts):
        provider = (d.provider or "").strip().lower()
        if not provider:
            p.add("INVALID_INPUT", "provider must not be empty", "providerRefs", i, "provider")
        ref = (d.ref or "").strip()
        if not ref or len(ref) > 255:
            p.add("INVALID_INPUT", "ref must be 1–255 characters", "providerRefs", i, "ref")
        currency = None
        if d.currency is not None:
            currency = p.currency(d.currency, "providerRefs", i, "currency")
        if (provider, currency) in seen:
            p.add("INVALID_INPUT", "two refs for one provider and currency", "providerRefs", i)
        seen.add((provider, currency))
        out.append(ProviderRef(provider, ref, currency))
    return out


def _shape(p: Problems, interval: str, interval_count: int, trial_days: int) -> None:
    if interval not in INTERVALS:
        p.add("INVALID_INPUT", f"unknown interval {interval!r}", "interval")
    if interval_count < 1 or interval_count > 1000:
        p.add("INVALID_INPUT", "intervalCount must be between 1 and 1000", "intervalCount")
    if trial_days < 0 or trial_days > 3650:
        p.add("INVALID_INPUT", "trialDays must be between 0 and 3650", "trialDays")
    if interval == "ONE_TIME" and trial_days:
        p.add("INVALID_INPUT", "a ONE_TIME plan has no trial", "trialDays")


async def _meter_ids(conn: asyncpg.Connection, drafts: Sequence[ChargeDraft]) -> dict[str, UUID]:
    codes = sorted({d.meter for d in drafts})
    if not codes:
        return {}
    rows = await conn.fetch("SELECT code, id FROM meters WHERE code = ANY($1::text[])", codes)
    return {r["code"]: r["id"] for r in rows}


# -- writes -----------------------------------------------------------------------------------


async def _write_prices(conn: asyncpg.Connection, plan_id: UUID, prices: list[Money]) -> None:
    await conn.execute("DELETE FROM plan_prices WHERE plan_id = $1", plan_id)
    await conn.executemany(
        "INSERT INTO plan_prices (plan_id, currency, amount_minor, position) VALUES ($1,$2,$3,$4)",
        [(plan_id, m.currency, m.minor, i) for i, m in enumerate(prices)],
    )


async def _write_features(conn: asyncpg.Connection, plan_id: UUID, features: list[Feature]) -> None:
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


async def _write_charges(conn: asyncpg.Connection, plan_id: UUID, charges: list[Charge]) -> None:
    await conn.execute("DELETE FROM usage_charges WHERE plan_id = $1", plan_id)
    await conn.executemany(
        "INSERT INTO usage_charges (plan_id, meter_id, model, currency, unit_amount, tiers, "
        "package_size, included_quantity, position) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
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
            )
            for i, c in enumerate(charges)
        ],
    )


async def _write_refs(conn: asyncpg.Connection, plan_id: UUID, refs: list[ProviderRef]) -> None:
    await conn.execute("DELETE FROM plan_provider_refs WHERE plan_id = $1", plan_id)
    await conn.executemany(
        "INSERT INTO plan_provider_refs (plan_id, provider, ref, currency) VALUES ($1,$2,$3,$4)",
        [(plan_id, r.provider, r.ref, r.currency) for r in refs],
    )


async def create_plan(db: Database, now: datetime, draft: PlanDraft) -> Plan:
    """Validate everything, then insert the plan and its parts in one transaction."""
    p = Problems()
    p.code(draft.code, "code", "code")
    p.text(draft.name, "name", "name")
    _shape(p, draft.interval, draft.interval_count, draft.trial_days)
    prices = _prices(p, draft.prices)
    features = _features(p, draft.features)
    refs = validate_provider_refs(p, draft.provider_refs)
    async with db.transaction() as conn:
        charges = _charges(p, draft.charges, await _meter_ids(conn, draft.charges))
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
                "ALREADY_EXISTS", f"a plan with code {draft.code!r} exists", ["code"]
            ) from None
        await _write_prices(conn, plan_id, prices)
        await _write_features(conn, plan_id, features)
        await _write_charges(conn, plan_id, charges)
        await _write_refs(conn, plan_id, refs)
        return (await load_plans(conn, ids=[plan_id]))[0]


async def _has_subscribers(conn: asyncpg.Connection, plan_id: UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE plan_id = $1 OR pending_plan_id = $1)"
            " OR EXISTS (SELECT 1 FROM checkouts WHERE plan_id = $1 AND status = 'COMPLETED')",
            plan_id,
        )
    )


async def update_plan(db: Database, now: datetime, changes: PlanChanges) -> Plan:
    """Change what may change; prices, interval and charges only while nobody subscribed."""
    p = Problems()
    async with db.transaction() as conn:
        row = await conn.fetchrow("SELECT * FROM plans WHERE code = $1 FOR UPDATE", changes.code)
        if row is None:
            raise UserInputError("NOT_FOUND", f"no plan {changes.code!r}", ["code"])
        plan_id: UUID = row["id"]
        name = row["name"]
        if not isinstance(changes.name, Omitted):
            name = p.text(changes.name, "name", "name")
        description = row["description"]
        if not isinstance(changes.description, Omitted):
            description = changes.description
        trial_days = row["trial_days"]
        if not isinstance(changes.trial_days, Omitted):
            trial_days = changes.trial_days
        interval = row["interval"]
        if not isinstance(changes.interval, Omitted):
            interval = changes.interval
        interval_count = row["interval_count"]
        if not isinstance(changes.interval_count, Omitted):
            interval_count = changes.interval_count
        private = row["private"]
        if not isinstance(changes.private, Omitted):
            private = changes.private
        _shape(p, interval, interval_count, trial_days)
        features = None if isinstance(changes.features, Omitted) else _features(p, changes.features)
        refs = (
            None
            if isinstance(changes.provider_refs, Omitted)
            else validate_provider_refs(p, changes.provider_refs)
        )
        prices = None if isinstance(changes.prices, Omitted) else _prices(p, changes.prices)
        charges = None
        if not isinstance(changes.charges, Omitted):
            charges = _charges(p, changes.charges, await _meter_ids(conn, changes.charges))
        p.raise_if_any()
        frozen_change = (
            prices is not None
            or charges is not None
            or interval != row["interval"]
            or interval_count != row["interval_count"]
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
            name,
            description,
            trial_days,
            interval,
            interval_count,
            now,
            private,
        )
        if features is not None:
            await _write_features(conn, plan_id, features)
        if refs is not None:
            await _write_refs(conn, plan_id, refs)
        if prices is not None:
            await _write_prices(conn, plan_id, prices)
        if charges is not None:
            await _write_charges(conn, plan_id, charges)
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
            raise UserInputError("NOT_FOUND", f"no plan {code!r}", ["code"])
        return (await load_plans(conn, ids=[plan_id]))[0]


# -- reads ------------------------------------------------------------------------------------


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
    rows = await conn.fetch(
        f"SELECT * FROM plans WHERE {' AND '.join(where)} ORDER BY created_at, code",  # noqa: S608
        list(ids) if ids is not None else None,
        list(codes) if codes is not None else None,
        *([private_for] if not include_private else []),
    )
    if not rows:
        return []
    plan_ids = [r["id"] for r in rows]
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
        "SELECT c.*, m.code AS meter_code FROM usage_charges c JOIN meters m ON m.id = c.meter_id "
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
        by_plan[r["plan_id"]]["charges"].append(
            Charge(
                meter_id=r["meter_id"],
                meter_code=r["meter_code"],
                model=r["model"],
                currency=r["currency"],
                unit_amount=r["unit_amount"],
                tiers=_tiers_from_json(r["tiers"]),
                package_size=r["package_size"],
                included_quantity=r["included_quantity"],
            )
        )
    for r in refs:
        by_plan[r["plan_id"]]["refs"].append(ProviderRef(r["provider"], r["ref"], r["currency"]))
    return [
        Plan(
            id=r["id"],
            code=r["code"],
            name=r["name"],
            description=r["description"],
            interval=r["interval"],
            interval_count=r["interval_count"],
            trial_days=r["trial_days"],
            archived=r["archived"],
            prices=tuple(by_plan[r["id"]]["prices"]),
            features=tuple(by_plan[r["id"]]["features"]),
            charges=tuple(by_plan[r["id"]]["charges"]),
            provider_refs=tuple(by_plan[r["id"]]["refs"]),
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            private=r["private"],
        )
        for r in rows
    ]


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
            p.add("NOT_FOUND", f"no plan {code!r}", "planCode")
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
