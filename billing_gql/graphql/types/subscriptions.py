"""Subscriptions' GraphQL face: Subscription, subscription, subscriptions, and the
subscription operations (cancel, resume, pause, change plan, portal)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import strawberry

from billing_gql.core.scopes import Scope
from billing_gql.core.subscriptions import Subscription as SubscriptionModel
from billing_gql.core.subscriptions import subscription_from_row
from billing_gql.customers.service import parse_uuid
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.graphql import typed
from billing_gql.graphql.auth import (
    admin_only,
    list_owner,
    require_admin,
    require_customer,
    require_viewer,
)
from billing_gql.graphql.common import Connection, Money
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import Forbidden, UserError, user_errors
from billing_gql.graphql.loaders import related, related_one
from billing_gql.graphql.pages import fetch_page, page_request
from billing_gql.graphql.types.catalog import Plan
from billing_gql.graphql.types.customers import Customer, load_customer
from billing_gql.graphql.types.loaders import (
    load_open_push_checkout,
    load_paid_renewal,
    load_plan,
    load_subscription,
)
from billing_gql.plugins.types import ProrationBehavior as ProrationBehaviorValue
from billing_gql.plugins.types import SubscriptionStatus as SubscriptionStatusValue
from billing_gql.subscriptions import service

if TYPE_CHECKING:
    from billing_gql.graphql.types.checkout import Checkout
    from billing_gql.graphql.types.invoices import Invoice

SubscriptionStatus = strawberry.enum(SubscriptionStatusValue, name="SubscriptionStatus")


@strawberry.type
class Subscription:
    model: strawberry.Private[SubscriptionModel]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.id))

    @strawberry.field
    async def customer(self, info: Info) -> Customer:
        return await related_one(info, load_customer, self.model.customer_id, Customer)

    @strawberry.field
    async def plan(self, info: Info) -> Plan:
        return await related_one(info, load_plan, self.model.plan_id, Plan)

    @strawberry.field
    def status(self) -> SubscriptionStatus:  # type: ignore[valid-type]
        return SubscriptionStatusValue(self.model.status)

    @strawberry.field
    def provider(self) -> str:
        return self.model.provider

    @typed.field(description="The provider's id: admin only (null for a customer token).")
    def provider_subscription_id(self, info: Info) -> str | None:
        return admin_only(info, self.model.provider_subscription_id)

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
        return await related(info, load_plan, self.model.pending_plan_id, Plan)

    @typed.field(description="When the pending plan takes effect.")
    def pending_plan_at(self) -> datetime | None:
        return self.model.pending_plan_at

    @typed.field(
        description="The open renewal (or pending-charges) checkout of a push-renewed "
        "subscription, else null."
    )
    async def renewal_checkout(
        self, info: Info
    ) -> Annotated[Checkout, strawberry.lazy("billing_gql.graphql.types.checkout")] | None:
        from billing_gql.graphql.types.checkout import Checkout

        model = await load_open_push_checkout(info, self.model.id)
        return Checkout(model=model) if model else None

    @typed.field(
        description="A push-renewed subscription whose next period is paid ahead: when that "
        "period ends (it starts at currentPeriodEnd, when the subscription moves into it). "
        "Null while the next period is unpaid."
    )
    async def renewed_until(self, info: Info) -> datetime | None:
        model = await load_paid_renewal(info, self.model.id)
        return model.paid_period_end if model else None

    @typed.field(description="The subscription's invoices (and credit notes), newest first.")
    async def invoices(
        self, info: Info, first: int = 50
    ) -> list[Annotated[Invoice, strawberry.lazy("billing_gql.graphql.types.invoices")]]:
        from billing_gql.graphql.types.invoices import subscription_invoices

        return await subscription_invoices(info, self.model.id, first)


@strawberry.type
class SubscriptionQuery:
    @typed.field(scope=Scope.READ, description="Admin, or the subscription's own customer.")
    async def subscription(self, info: Info, id: strawberry.ID) -> Subscription | None:
        require_viewer(info)
        uid = parse_uuid(id)
        model = await load_subscription(info, uid) if uid else None
        require_customer(info, model.customer_id if model else None)
        return Subscription(model=model) if model else None

    @typed.field(
        scope=Scope.READ,
        description="Newest first. Admin (customerId optional), or a customer for itself.",
    )
    async def subscriptions(
        self,
        info: Info,
        customer_id: strawberry.ID | None = None,
        status: list[SubscriptionStatus] | None = None,  # type: ignore[valid-type]
        first: int | None = 50,
        after: str | None = None,
    ) -> Connection[Subscription]:
        owner = list_owner(info, customer_id)
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
        return Connection.of(page, lambda r: Subscription(model=subscription_from_row(r)))


ProrationBehavior = strawberry.enum(ProrationBehaviorValue, name="ProrationBehavior")


@strawberry.input
class CancelSubscriptionInput:
    subscription_id: strawberry.ID
    at_period_end: bool | None = True


@strawberry.input
class ChangeSubscriptionPlanInput:
    subscription_id: strawberry.ID
    plan_code: str
    proration: ProrationBehavior | None = ProrationBehaviorValue.CREATE_PRORATIONS  # type: ignore[valid-type]
    preview: bool | None = False


@strawberry.type
class SubscriptionPayload:
    subscription: Subscription | None
    user_errors: list[UserError]


@strawberry.type
class ChangeSubscriptionPlanPayload:
    subscription: Subscription | None
    proration_amount: Money | None = strawberry.field(
        description="Owed now or at the next renewal (negative: a credit); null only for NONE."
    )
    effective_at: datetime | None
    user_errors: list[UserError]


@strawberry.type
class PortalSessionPayload:
    url: str | None
    user_errors: list[UserError]


async def _owned_subscription(info: Info, subscription_id: str) -> UUID | None:
    """The subscription id, after the auth rule: admin, or the subscription's own customer
    (a customer naming another's or an unknown subscription is FORBIDDEN)."""
    viewer = require_viewer(info)
    uid = parse_uuid(subscription_id)
    if viewer.is_admin:
        return uid
    model = await load_subscription(info, uid) if uid else None
    require_customer(info, model.customer_id if model else None)
    return uid


def _payload(model: SubscriptionModel) -> SubscriptionPayload:
    return SubscriptionPayload(subscription=Subscription(model=model), user_errors=[])


def _failed(exc: UserInputError | UserInputErrors, prefix: list[str] | None) -> SubscriptionPayload:
    return SubscriptionPayload(subscription=None, user_errors=user_errors(exc, prefix))


@strawberry.type
class SubscriptionMutation:
    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin, or the subscription's customer. At period end by default.",
    )
    async def cancel_subscription(
        self, info: Info, input: CancelSubscriptionInput
    ) -> SubscriptionPayload:
        uid = await _owned_subscription(info, input.subscription_id)
        try:
            model = await service.cancel_subscription(
                info.context.runtime, uid, at_period_end=input.at_period_end is not False
            )
        except (UserInputError, UserInputErrors) as exc:
            return _failed(exc, ["input"])
        return _payload(model)

    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin, or the subscription's customer. Undo a pending cancel; "
        "resuming a pause is admin-only (FORBIDDEN for the customer).",
    )
    async def resume_subscription(
        self, info: Info, subscription_id: strawberry.ID
    ) -> SubscriptionPayload:
        uid = await _owned_subscription(info, subscription_id)
        admin = info.context.viewer.is_admin
        if not admin and uid is not None:
            model = await load_subscription(info, uid)
            if model is not None and model.status == "PAUSED":
                raise Forbidden("only an admin can resume a paused subscription")
        try:
            model = await service.resume_subscription(info.context.runtime, uid, unpause=admin)
        except (UserInputError, UserInputErrors) as exc:
            return _failed(exc, None)
        return _payload(model)

    @typed.mutation(
        scope=Scope.ADMIN, description="Admin. NOT_SUPPORTED where the provider cannot pause."
    )
    async def pause_subscription(
        self, info: Info, subscription_id: strawberry.ID
    ) -> SubscriptionPayload:
        require_admin(info)
        try:
            model = await service.pause_subscription(
                info.context.runtime, parse_uuid(subscription_id)
            )
        except (UserInputError, UserInputErrors) as exc:
            return _failed(exc, None)
        return _payload(model)

    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin. Move to another plan, with proration; preview changes nothing.",
    )
    async def change_subscription_plan(
        self, info: Info, input: ChangeSubscriptionPlanInput
    ) -> ChangeSubscriptionPlanPayload:
        require_admin(info)
        behavior = ProrationBehaviorValue(input.proration or "CREATE_PRORATIONS")
        try:
            change = await service.change_plan(
                info.context.runtime,
                parse_uuid(input.subscription_id),
                input.plan_code,
                proration=behavior,
                preview=bool(input.preview),
            )
        except (UserInputError, UserInputErrors) as exc:
            return ChangeSubscriptionPlanPayload(
                subscription=None,
                proration_amount=None,
                effective_at=None,
                user_errors=user_errors(exc, ["input"]),
            )
        return ChangeSubscriptionPlanPayload(
            subscription=Subscription(model=change.subscription),
            proration_amount=Money.of(change.proration) if change.proration else None,
            effective_at=change.effective_at,
            user_errors=[],
        )

    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin, or the customer itself. The provider's customer portal "
        "(of the customer's latest subscription).",
    )
    async def create_portal_session(
        self, info: Info, customer_id: strawberry.ID, return_url: str | None = None
    ) -> PortalSessionPayload:
        uid = parse_uuid(customer_id)
        viewer = require_customer(info, uid)
        try:
            url = await service.create_portal_session(
                info.context.runtime, uid, return_url, by_admin=viewer.is_admin
            )
        except (UserInputError, UserInputErrors) as exc:
            return PortalSessionPayload(url=None, user_errors=user_errors(exc))
        return PortalSessionPayload(url=url, user_errors=[])
