"""Types shared by every domain's GraphQL face: Money, ProviderRef, pagination."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry

from billing_gql.catalog.models import ProviderRef as ProviderRefModel
from billing_gql.graphql import typed
from billing_gql.money import Money as MoneyValue

MAX_PAGE = 100


@strawberry.type(description="An amount in major units with the currency's exact minor digits.")
class Money:
    value: strawberry.Private[MoneyValue]

    @typed.field(graphql_type=Decimal, description='Major units: "29.00", "199000".')
    def amount(self) -> str:
        return self.value.amount

    @typed.field(description="ISO 4217, upper-case.")
    def currency(self) -> str:
        return self.value.currency

    @classmethod
    def of(cls, value: MoneyValue) -> Money:
        return cls(value=value)

    @classmethod
    def minor(cls, minor: int, currency: str) -> Money:
        return cls(value=MoneyValue(minor, currency))


@strawberry.type
class ProviderRef:
    provider: str
    ref: str
    currency: str | None

    @classmethod
    def of(cls, value: ProviderRefModel) -> ProviderRef:
        return cls(provider=value.provider, ref=value.ref, currency=value.currency)


@strawberry.input
class ProviderRefInput:
    provider: str
    ref: str
    currency: str | None = None


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


def encode_cursor(created_at: datetime, id: Any) -> str:
    """An opaque cursor for newest-first pages ordered by (created_at, id)."""
    raw = json.dumps([created_at.isoformat(), str(id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The position a cursor names; raises ``ValueError`` for a malformed one."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, id_ = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(created), str(id_)
    except (ValueError, TypeError, binascii.Error):
        raise ValueError("malformed cursor") from None


def page_size(first: int | None) -> int:
    """``first`` clamped to 1..100 (API.md: at most 100)."""
    if first is None:
        return 50
    if first < 0:
        raise ValueError("first must not be negative")
    return min(first, MAX_PAGE)


def page_info(cursors: Sequence[str], has_next: bool, has_previous: bool) -> PageInfo:
    return PageInfo(
        has_next_page=has_next,
        has_previous_page=has_previous,
        start_cursor=cursors[0] if cursors else None,
        end_cursor=cursors[-1] if cursors else None,
    )
