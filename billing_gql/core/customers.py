"""Customer values as services return them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class Customer:
    id: UUID
    external_id: str
    email: str | None
    name: str | None
    country: str | None
    currency: str | None
    metadata: Any
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    """Set by ``deleteCustomer``: personal data erased, financial records kept."""


@dataclass(frozen=True)
class CustomerSession:
    token: str
    """Shown once; only its hash is stored."""
    expires_at: datetime
    customer_id: UUID


def customer_from_row(row: Any) -> Customer:
    return Customer(
        id=row["id"],
        external_id=row["external_id"],
        email=row["email"],
        name=row["name"],
        country=row["country"],
        currency=row["currency"],
        metadata=row["metadata"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row.get("deleted_at"),
    )
