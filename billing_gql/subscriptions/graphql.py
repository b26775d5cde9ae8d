"""Subscriptions' GraphQL face: Subscription, subscription, subscriptions, and the
subscription operations (cancel, resume, pause, change plan, portal)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from billing_gql.catalog.graphql import Plan
from billing_gql.customers.graphql import Customer, InvalidInput, load_customer
from billing_gql.customers.service import parse_uuid
from billing_gql.graphql import typed
from billing_gql.graphql.auth import require_customer, require_viewer
from billing_gql.graphql.common import PageInfo, page_info
from billing_gql.graphql.context import Info
from billing_gql.graphql.pages import fetch_page, page_request
from billing_gql.plugins.types import SubscriptionStatus as SubscriptionStatusValue
from billing_gql.subscriptions.loaders import (
    load_open_push_checkout,
    load_plan,
    load_subscription,
)
from billing_gql.subscriptions.models import Subscription as SubscriptionModel
from billing_gql.subscriptions.models import subscription_from_row

if TYPE_CHECKING:
    from billing_gql.checkout.graphql import Checkout

SubscriptionStatus = strawberry.enum(SubscriptionStatusValue, name="SubscriptionStatus")


@strawberry.type
class Subscription:
    model: strawberry.Private[SubscriptionModel]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.id))

    @strawberry.field
    async def customer(self, info: Info) -> Customer:
        model = await load_customer(info, self.model.customer_id)
        assert model is not None
        return Customer(model=model)

    @strawberry.field
    async def plan(self, info: Info) -> Plan:
        model = await load_plan(info, self.model.plan_id)
        assert model is not None
        return Plan(model=model)

    @strawberry.field
    def status(self) -> SubscriptionStatus:  # type: ignore[valid-type]
        return SubscriptionStatusValue(self.model.status)

    @strawberry.field
    def provider(self) -> str:
        return self.model.provider

    @strawberry.field
    def provider_subscription_id(self) -> str | None:
        return self.model.provider_subscription_id

    @strawberry.field
    def currency(self) -> str:
        return self.model.currency

    @strawberry.field
    def quantity(self) -> int:
        return self.model.quantity

    @strawberry.field
    def current_period_start(self) -> datetime | None:
        return self.model.current_period_start

    @strawberry.field
    def current_period_end(self) -> datetime | None:
        return self.model.current_period_end

    @strawberry.field
    def trial_end(self) -> datetime | None:
        return self.model.trial_end

    @strawberry.field
    def cancel_at_period_end(self) -> bool:
        return self.model.cancel_at_period_end

    @strawberry.field
    def canceled_at(self) -> datetime | None:
        return self.model.canceled_at

    @strawberry.field
    def ended_at(self) -> datetime | None:
        return self.model.ended_at

    @strawberry.field
    def created_at(self) -> datetime:
        return self.model.created_at

    @typed.field(description="A plan change waiting for the next period.")
    async def pending_plan(self, info: Info) -> Plan | None:
        if self.model.pending_plan_id is None:
            return None
        model = await load_plan(info, self.model.pending_plan_id)
        return Plan(model=model) if model else None

    @typed.field(description="When the pending plan takes effect.")
    def pending_plan_at(self) -> datetime | None:
        return self.model.pending_plan_at

    @typed.field(
        description="The open renewal (or pending-charges) checkout of a push-renewed "
        "subscription, else null."
    )
    async def renewal_checkout(
        self, info: Info
    ) -> Annotated[Checkout, strawberry.lazy("billing_gql.checkout.graphql")] | None:
        from billing_gql.checkout.graphql import Checkout

        model = await load_open_push_checkout(info, self.model.id)
        return Checkout(model=model) if model else None


@strawberry.type
class SubscriptionEdge:
    cursor: str
    node: Subscription


@strawberry.type
class SubscriptionConnection:
    edges: list[SubscriptionEdge]
    page_info: PageInfo

    @strawberry.field
    def nodes(self) -> list[Subscription]:
        return [e.node for e in self.edges]


@strawberry.type
class SubscriptionQuery:
    @typed.field(description="Admin, or the subscription's own customer.")
    async def subscription(self, info: Info, id: strawberry.ID) -> Subscription | None:
        require_viewer(info)
        uid = parse_uuid(id)
        model = await load_subscription(info, uid) if uid else None
        require_customer(info, model.customer_id if model else None)
        return Subscription(model=model) if model else None

    @typed.field(description="Newest first. Admin (customerId optional), or a customer for itself.")
    async def subscriptions(
        self,
        info: Info,
        customer_id: strawberry.ID | None = None,
        status: list[SubscriptionStatus] | None = None,  # type: ignore[valid-type]
        first: int | None = 50,
        after: str | None = None,
    ) -> SubscriptionConnection:
        viewer = require_viewer(info)
        if customer_id is None:
            owner = None if viewer.is_admin else viewer.customer_id
        else:
            owner = parse_uuid(customer_id)
            require_customer(info, owner)
            if owner is None:
                raise InvalidInput("customerId is not a valid id")
        request = page_request(first, after)
        where: list[str] = []
        args: list[object] = []
        if owner is not None:
            args.append(owner)
            where.append(f"customer_id = ${len(args)}")
        if status is not None:
            args.append([str(s) for s in status])
            where.append(f"status = ANY(${len(args)}::text[])")
        page = await fetch_page(
            info.context.runtime.db.pool,
            table="subscriptions",
            order_column="created_at",
            where=where,
            args=args,
            request=request,
        )
        edges = [
            SubscriptionEdge(cursor=c, node=Subscription(model=subscription_from_row(r)))
            for r, c in zip(page.rows, page.cursors, strict=True)
        ]
        return SubscriptionConnection(
            edges=edges, page_info=page_info(page.cursors, page.has_next, page.has_previous)
        )
