"""Types shared by every domain's GraphQL face: Money, ProviderRef, PageInfo, and the generic
Relay ``Connection[T]``/``Edge[T]``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Generic, TypeVar

import strawberry

from billing_gql.core.catalog import ProviderRef as ProviderRefModel
from billing_gql.graphql import typed
from billing_gql.graphql.pages import Page
from billing_gql.money import Money as MoneyValue

T = TypeVar("T")


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


@strawberry.type
class Edge(Generic[T]):
    """One node of a :class:`Connection` and its cursor; ``Edge[Payment]`` is ``PaymentEdge``."""

    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    """A newest-first Relay connection (docs/api.md#pagination). Strawberry names a
    specialisation after its node type: ``Connection[Payment]`` is ``PaymentConnection``."""

    edges: list[Edge[T]]
    page_info: PageInfo

    @strawberry.field
    def nodes(self) -> list[T]:
        return [e.node for e in self.edges]

    @classmethod
    def of(cls, page: Page, node: Callable[[Any], T]) -> Connection[T]:
        """The connection of a page read by ``graphql.pages.fetch_page``; ``node`` turns one of
        its rows into the node type."""
        return cls(
            edges=[
                Edge(cursor=c, node=node(r)) for r, c in zip(page.rows, page.cursors, strict=True)
            ],
            page_info=page_info(page.cursors, page.has_next, page.has_previous),
        )
