"""Types shared by every domain's GraphQL face: Money, ProviderRef, PageInfo."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import strawberry

from billing_gql.core.catalog import ProviderRef as ProviderRefModel
from billing_gql.graphql import typed
from billing_gql.money import Money as MoneyValue


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


def page_info(cursors: Sequence[str], has_next: bool, has_previous: bool) -> PageInfo:
    """The ``pageInfo`` of a page whose edges have ``cursors`` (see ``graphql.pages``)."""
    return PageInfo(
        has_next_page=has_next,
        has_previous_page=has_previous,
        start_cursor=cursors[0] if cursors else None,
        end_cursor=cursors[-1] if cursors else None,
    )
