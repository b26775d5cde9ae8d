"""Catalog values as services return them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from billing_gql.money import Money


@dataclass(frozen=True)
class Feature:
    feature: str
    enabled: bool
    limit: Decimal | None


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None
    """Inclusive upper bound; ``None`` is the rest."""
    unit_amount: Decimal
    flat_amount: Decimal


@dataclass(frozen=True)
class ProviderRef:
    provider: str
    ref: str
    currency: str | None


def ref_for(refs: tuple[ProviderRef, ...], provider: str, currency: str) -> str | None:
    """The ref for (provider, currency) among ``refs``, else the provider's currency-less one."""
    fallback = None
    for ref in refs:
        if ref.provider != provider:
            continue
        if ref.currency == currency:
            return ref.ref
        if ref.currency is None:
            fallback = ref.ref
    return fallback


@dataclass(frozen=True)
class Charge:
    meter_id: UUID
    meter_code: str
    model: str
    currency: str
    unit_amount: Decimal | None
    tiers: tuple[Tier, ...] | None
    package_size: int | None
    included_quantity: Decimal
    provider_refs: tuple[ProviderRef, ...] = ()
    """The charge's references at providers that bill usage through one per charge (a
    Stripe metered price)."""
    meter_refs: tuple[ProviderRef, ...] = ()
    """Its meter's references (the event names usage is forwarded under), as read."""

    def provider_ref(self, provider: str, currency: str) -> str | None:
        """The charge's ref for (provider, currency), else the provider's currency-less one."""
        return ref_for(self.provider_refs, provider, currency)


@dataclass(frozen=True)
class Plan:
    id: UUID
    code: str
    name: str
    description: str | None
    interval: str
    interval_count: int
    trial_days: int
    archived: bool
    prices: tuple[Money, ...]
    features: tuple[Feature, ...]
    charges: tuple[Charge, ...]
    provider_refs: tuple[ProviderRef, ...]
    created_at: datetime
    updated_at: datetime
    private: bool = False
    """Not listed publicly; sold by an admin's checkout or to customers granted access."""

    def price(self, currency: str) -> Money | None:
        """The plan's price in ``currency``, if it has one."""
        for price in self.prices:
            if price.currency == currency:
                return price
        return None

    def provider_ref(self, provider: str, currency: str) -> str | None:
        """The ref for (provider, currency), else the provider's currency-less ref."""
        return ref_for(self.provider_refs, provider, currency)
