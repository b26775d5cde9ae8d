"""Provider references of a plan or meter: validating them and storing a plan's.

A reference names the provider's own product or price for one of ours (``providerRefs``),
optionally per currency; meters use the same validation (:mod:`billing_gql.usage.meters`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from billing_gql.core.catalog import ProviderRef
from billing_gql.validation import Problems

__all__ = ["ProviderRefDraft", "validate_provider_refs", "write_provider_refs"]


@dataclass(frozen=True)
class ProviderRefDraft:
    provider: str
    ref: str
    currency: str | None = None


def validate_provider_refs(
    p: Problems, drafts: Sequence[ProviderRefDraft], *path: str | int
) -> list[ProviderRef]:
    """The references, checked; ``path``: where the ``providerRefs`` list sits in the input
    (empty at the top level, ``("charges", 0)`` for a usage charge's)."""
    out: list[ProviderRef] = []
    seen: set[tuple[str, str | None]] = set()
    at = (*path, "providerRefs")
    for i, d in enumerate(drafts):
        provider = (d.provider or "").strip().lower()
        if not provider:
            p.add("INVALID_INPUT", "provider must not be empty", *at, i, "provider")
        ref = (d.ref or "").strip()
        if not ref or len(ref) > 255:
            p.add("INVALID_INPUT", "ref must be 1–255 characters", *at, i, "ref")
        currency = None
        if d.currency is not None:
            currency = p.currency(d.currency, *at, i, "currency")
        if (provider, currency) in seen:
            p.add("INVALID_INPUT", "two refs for one provider and currency", *at, i)
        seen.add((provider, currency))
        out.append(ProviderRef(provider, ref, currency))
    return out


async def write_provider_refs(
    conn: asyncpg.Connection, plan_id: UUID, refs: list[ProviderRef]
) -> None:
    await conn.execute("DELETE FROM plan_provider_refs WHERE plan_id = $1", plan_id)
    await conn.executemany(
        "INSERT INTO plan_provider_refs (plan_id, provider, ref, currency) VALUES ($1,$2,$3,$4)",
        [(plan_id, r.provider, r.ref, r.currency) for r in refs],
    )
