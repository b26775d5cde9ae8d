"""Meters: what usage events are aggregated into (COUNT, SUM, MAX, UNIQUE_COUNT, LATEST)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from billing_gql.catalog.provider_refs import ProviderRefDraft, validate_provider_refs
from billing_gql.core.catalog import ProviderRef
from billing_gql.core.usage import Meter
from billing_gql.db.database import Database
from billing_gql.errors import UserInputError
from billing_gql.money import shown
from billing_gql.validation import Problems

AGGREGATIONS = ("COUNT", "SUM", "MAX", "UNIQUE_COUNT", "LATEST")


@dataclass(frozen=True)
class MeterDraft:
    code: str
    name: str
    aggregation: str
    property: str | None = None
    provider_refs: Sequence[ProviderRefDraft] = ()


async def create_meter(db: Database, now: datetime, draft: MeterDraft) -> Meter:
    p = Problems()
    p.code(draft.code, "code", "code")
    p.text(draft.name, "name", "name")
    if draft.aggregation not in AGGREGATIONS:
        p.add("INVALID_INPUT", f"unknown aggregation {shown(draft.aggregation)}", "aggregation")
    prop = draft.property.strip() if draft.property is not None else None
    if prop is not None and not (0 < len(prop) <= 200):
        p.add("INVALID_INPUT", "property must be 1-200 characters", "property")
    refs = validate_provider_refs(p, draft.provider_refs)
    p.raise_if_any()
    async with db.transaction() as conn:
        try:
            meter_id = await conn.fetchval(
                "INSERT INTO meters (code, name, aggregation, property, created_at) "
                "VALUES ($1,$2,$3,$4,$5) RETURNING id",
                draft.code,
                draft.name.strip(),
                draft.aggregation,
                prop,
                now,
            )
        except asyncpg.UniqueViolationError:
            raise UserInputError(
                "ALREADY_EXISTS", f"a meter with code {shown(draft.code)} exists", ["code"]
            ) from None
        await conn.executemany(
            "INSERT INTO meter_provider_refs (meter_id, provider, ref, currency) "
            "VALUES ($1,$2,$3,$4)",
            [(meter_id, r.provider, r.ref, r.currency) for r in refs],
        )
        return (await load_meters(conn, ids=[meter_id]))[0]


async def load_meters(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    ids: Sequence[object] | None = None,
    codes: Sequence[str] | None = None,
) -> list[Meter]:
    rows = await conn.fetch(
        "SELECT * FROM meters WHERE ($1::uuid[] IS NULL OR id = ANY($1::uuid[])) "
        "AND ($2::text[] IS NULL OR code = ANY($2::text[])) ORDER BY created_at, code",
        list(ids) if ids is not None else None,
        list(codes) if codes is not None else None,
    )
    refs = await conn.fetch(
        "SELECT meter_id, provider, ref, currency FROM meter_provider_refs "
        "WHERE meter_id = ANY($1) ORDER BY provider",
        [r["id"] for r in rows],
    )
    by_meter: dict[object, list[ProviderRef]] = {}
    for r in refs:
        by_meter.setdefault(r["meter_id"], []).append(
            ProviderRef(r["provider"], r["ref"], r["currency"])
        )
    return [
        Meter(
            id=r["id"],
            code=r["code"],
            name=r["name"],
            aggregation=r["aggregation"],
            property=r["property"],
            provider_refs=tuple(by_meter.get(r["id"], [])),
            created_at=r["created_at"],
        )
        for r in rows
    ]
