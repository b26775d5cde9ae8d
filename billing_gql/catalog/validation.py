"""Plan validation: the drafts a client sends and the checks that turn them into records.

Every check adds its problems to one :class:`~billing_gql.validation.Problems`, so a plan's
input is reported whole before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.catalog.provider_refs import ProviderRefDraft, validate_provider_refs
from billing_gql.core.catalog import Charge, Feature, ProviderRef, Tier
from billing_gql.money import Money, shown
from billing_gql.validation import OMITTED, Omitted, Problems

__all__ = [
    "CHARGE_MODELS",
    "INTERVALS",
    "ChargeDraft",
    "FeatureDraft",
    "PlanChanges",
    "PlanDraft",
    "PriceDraft",
    "TierDraft",
    "meter_ids",
    "validate_charges",
    "validate_features",
    "validate_prices",
    "validate_shape",
]

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
    provider_refs: Sequence[ProviderRefDraft] = ()
    """References at providers that bill usage per charge (a Stripe metered price)."""


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


def validate_prices(p: Problems, drafts: Sequence[PriceDraft]) -> list[Money]:
    out: list[Money] = []
    if not drafts:
        p.add("INVALID_INPUT", "a plan needs at least one price", "prices")
    seen: set[str] = set()
    for i, draft in enumerate(drafts):
        before = len(p.errors)
        currency = p.currency(draft.currency, "prices", i, "currency")
        if currency in seen:
            p.add("INVALID_INPUT", f"two prices in {currency}", "prices", i, "currency")
        seen.add(currency)
        minor = p.amount(draft.amount, currency, "prices", i, "amount")
        if len(p.errors) == before:
            out.append(Money(minor, currency))
    return out


def validate_features(p: Problems, drafts: Sequence[FeatureDraft]) -> list[Feature]:
    out: list[Feature] = []
    seen: set[str] = set()
    for i, draft in enumerate(drafts):
        code = p.code(draft.feature, "feature", "features", i, "feature")
        if code in seen:
            p.add(
                "INVALID_INPUT", f"feature {shown(code)} is listed twice", "features", i, "feature"
            )
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


def validate_charges(
    p: Problems, drafts: Sequence[ChargeDraft], meters: dict[str, UUID]
) -> list[Charge]:
    out: list[Charge] = []
    for i, d in enumerate(drafts):
        path: tuple[str | int, ...] = ("charges", i)
        meter_id = meters.get(d.meter)
        if meter_id is None:
            p.add("UNKNOWN_METER", f"no meter {shown(d.meter)}", *path, "meter")
        if d.model not in CHARGE_MODELS:
            p.add("INVALID_INPUT", f"unknown charge model {shown(d.model)}", *path, "model")
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
        refs = _charge_refs(p, d.provider_refs, currency, *path)
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
                provider_refs=tuple(refs),
            )
        )
    return out


def _charge_refs(
    p: Problems, drafts: Sequence[ProviderRefDraft], currency: str, *path: str | int
) -> list[ProviderRef]:
    """A charge's references, checked like a plan's; one naming a currency names the
    charge's own (a metered price bills in one currency)."""
    refs = validate_provider_refs(p, drafts, *path)
    for i, ref in enumerate(refs):
        if ref.currency is not None and currency and ref.currency != currency:
            p.add(
                "INVALID_INPUT",
                f"the charge is in {currency}, this reference in {ref.currency}",
                *path,
                "providerRefs",
                i,
                "currency",
            )
    return refs


def validate_shape(p: Problems, interval: str, interval_count: int, trial_days: int) -> None:
    if interval not in INTERVALS:
        p.add("INVALID_INPUT", f"unknown interval {shown(interval)}", "interval")
    if interval_count < 1 or interval_count > 1000:
        p.add("INVALID_INPUT", "intervalCount must be between 1 and 1000", "intervalCount")
    if trial_days < 0 or trial_days > 3650:
        p.add("INVALID_INPUT", "trialDays must be between 0 and 3650", "trialDays")
    if interval == "ONE_TIME" and trial_days:
        p.add("INVALID_INPUT", "a ONE_TIME plan has no trial", "trialDays")


async def meter_ids(conn: asyncpg.Connection, drafts: Sequence[ChargeDraft]) -> dict[str, UUID]:
    codes = sorted({d.meter for d in drafts})
    if not codes:
        return {}
    rows = await conn.fetch("SELECT code, id FROM meters WHERE code = ANY($1::text[])", codes)
    return {r["code"]: r["id"] for r in rows}
