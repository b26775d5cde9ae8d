"""Usage values as services return them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from billing_gql.catalog.models import ProviderRef


@dataclass(frozen=True)
class Meter:
    id: UUID
    code: str
    name: str
    aggregation: str
    property: str | None
    provider_refs: tuple[ProviderRef, ...]
    created_at: datetime
