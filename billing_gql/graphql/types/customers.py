"""Customers' GraphQL face: Customer, viewer, customer, upsertCustomer, createCustomerSession."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, cast
from uuid import UUID

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON

from billing_gql.core.customers import Customer as CustomerModel
from billing_gql.core.scopes import Scope
from billing_gql.customers import data_rights, service
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.graphql import typed
from billing_gql.graphql.auth import admin_only, require_admin, require_customer, require_viewer
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import InvalidInput, UserError, user_errors
from billing_gql.graphql.loaders import by_key, loader
from billing_gql.graphql.pages import DEFAULT_PAGE, page_request
from billing_gql.graphql.types.loaders import (
    load_customer_entitlements,
    load_customer_subscriptions,
)
from billing_gql.validation import OMITTED

if TYPE_CHECKING:
    from billing_gql.graphql.types.entitlements import Entitlement
    from billing_gql.graphql.types.subscriptions import Subscription


@strawberry.type
class Customer:
    model: strawberry.Private[CustomerModel]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.id))

    @strawberry.field
    def external_id(self) -> str:
        return self.model.external_id

    @strawberry.field
    def email(self) -> str | None:
        return self.model.email

    @strawberry.field
    def name(self) -> str | None:
        return self.model.name

    @strawberry.field
    def country(self) -> str | None:
        return self.model.country

    @strawberry.field
    def currency(self) -> str | None:
        return self.model.currency

    @typed.field(
        description="When deleteCustomer erased the customer's personal data (null: not "
        "deleted). A deleted customer keeps its id, country, currency and financial records; "
        "its email, name and metadata are null and its externalId is `deleted:<id>`."
    )
    def deleted_at(self) -> datetime | None:
        return self.model.deleted_at

    @typed.field(description="The operator's own data: admin only (null for a customer token).")
    def metadata(self, info: Info) -> JSON | None:
        return admin_only(info, self.model.metadata)

    @typed.field(description="Newest first: the first `first` (at most 100; more is clamped).")
    async def subscriptions(
        self, info: Info, first: int | None = DEFAULT_PAGE
    ) -> list[Annotated[Subscription, strawberry.lazy("billing_gql.graphql.types.subscriptions")]]:
        from billing_gql.graphql.types.subscriptions import Subscription

        size = page_request(first, None).size
        found = await load_customer_subscriptions(info, self.model.id)
        return [Subscription(model=m) for m in found[:size]]

    @typed.field(description="Every feature the customer is granted.")
    async def entitlements(
        self, info: Info
    ) -> list[Annotated[Entitlement, strawberry.lazy("billing_gql.graphql.types.entitlements")]]:
        from billing_gql.graphql.types.entitlements import Entitlement

        return [Entitlement.of(v) for v in await load_customer_entitlements(info, self.model.id)]


def _customers(info: Info) -> DataLoader[UUID, CustomerModel | None]:
    """The request's customers by id."""

    async def batch(ids: Any) -> list[CustomerModel | None]:
        found = await service.load_customers(info.context.runtime.db.pool, ids=list(ids))
        return by_key(found, ids, lambda c: c.id)

    return loader(info, "customer", batch)


async def load_customer(info: Info, customer_id: UUID) -> CustomerModel | None:
    """A customer through the request's DataLoader."""
    return await _customers(info).load(customer_id)


async def resolve_customer_id(
    info: Info,
    customer_id: str | None,
    external_id: str | None,
    *,
    arguments: str = "customerId and externalCustomerId",
) -> UUID | None:
    """The customer named by exactly one of two arguments (``arguments`` names them for the
    error message).

    Raises INVALID_INPUT unless exactly one is given; FORBIDDEN when a customer token names
    someone else (or no one). Returns ``None`` for an admin naming nobody that exists.
    """
    if (customer_id is None) == (external_id is None):
        require_viewer(info)
        raise InvalidInput(f"give exactly one of {arguments}")
    if customer_id is not None:
        uid = service.parse_uuid(customer_id)
    else:
        assert external_id is not None
        found = await service.get_customer(info.context.runtime.db, external_id=external_id)
        uid = found.id if found else None
        if found is not None:
            # The row is read: a resolver loading this customer next need not read it again.
            _customers(info).prime(found.id, found)
    require_customer(info, uid)
    return uid


@strawberry.input(description="Keyed by externalId. Omitted fields keep their value; null clears.")
class UpsertCustomerInput:
    external_id: str
    email: str | None = strawberry.UNSET
    name: str | None = strawberry.UNSET
    country: str | None = strawberry.UNSET
    currency: str | None = strawberry.UNSET
    metadata: JSON | None = strawberry.field(
        default=strawberry.UNSET, description="Replaced whole."
    )


@strawberry.type
class CustomerPayload:
    customer: Customer | None
    user_errors: list[UserError]


@strawberry.type
class CustomerSessionPayload:
    token: str | None = strawberry.field(description="Shown once; send as Bearer token.")
    expires_at: datetime | None
    user_errors: list[UserError]


@strawberry.type
class RevokeCustomerSessionsPayload:
    revoked: int | None = strawberry.field(description="Session tokens that were still live.")
    user_errors: list[UserError]


def _opt(value: object) -> Any:
    return OMITTED if value is strawberry.UNSET else value


@strawberry.type
class CustomerQuery:
    @typed.field(
        scope=Scope.READ, description="The customer of the session token (null for an admin key)."
    )
    async def viewer(self, info: Info) -> Customer | None:
        viewer = require_viewer(info)
        if viewer.customer_id is None:
            return None
        model = await load_customer(info, viewer.customer_id)
        return Customer(model=model) if model else None

    @typed.field(
        scope=Scope.READ, description="Admin, or the customer itself. Exactly one of id/externalId."
    )
    async def customer(
        self, info: Info, id: strawberry.ID | None = None, external_id: str | None = None
    ) -> Customer | None:
        uid = await resolve_customer_id(info, id, external_id, arguments="id and externalId")
        if uid is None:
            return None
        model = await load_customer(info, uid)
        return Customer(model=model) if model else None


@strawberry.type
class DeleteCustomerPayload:
    customer: Customer | None
    user_errors: list[UserError]


@strawberry.type
class DataRightsQuery:
    @typed.field(
        scope=Scope.ADMIN,
        description="Admin. Everything held about a customer, as one JSON object (null: no "
        "such customer): the customer, its provider accounts, subscriptions, checkouts, "
        "payments, invoice items, usage per meter, grants, plan access, trials, session "
        "metadata and the provider webhook deliveries that name it.",
    )
    async def export_customer_data(self, info: Info, customer_id: strawberry.ID) -> JSON | None:
        require_admin(info)
        uid = service.parse_uuid(customer_id)
        data = await data_rights.export_customer_data(info.context.runtime.db, uid)
        return cast("JSON | None", data)


@strawberry.type
class DataRightsMutation:
    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin. Erase a customer's personal data (email, name, metadata, "
        "addresses, tax ids; externalId becomes `deleted:<id>`), keeping its financial "
        "records anonymized; its session tokens are revoked and its open checkouts expire. "
        "Refused with CUSTOMER_HAS_LIVE_SUBSCRIPTION until every subscription has ended.",
    )
    async def delete_customer(
        self, info: Info, customer_id: strawberry.ID
    ) -> DeleteCustomerPayload:
        require_admin(info)
        rt = info.context.runtime
        try:
            model = await data_rights.delete_customer(
                rt.db, service.parse_uuid(customer_id), await rt.clock.now()
            )
        except UserInputError as exc:
            return DeleteCustomerPayload(customer=None, user_errors=user_errors(exc))
        return DeleteCustomerPayload(customer=Customer(model=model), user_errors=[])


@strawberry.type
class CustomerMutation:
    @typed.mutation(
        scope=Scope.ADMIN, description="Admin. Create or update a customer by externalId."
    )
    async def upsert_customer(self, info: Info, input: UpsertCustomerInput) -> CustomerPayload:
        require_admin(info)
        rt = info.context.runtime
        data = service.CustomerUpsert(
            external_id=input.external_id,
            email=_opt(input.email),
            name=_opt(input.name),
            country=_opt(input.country),
            currency=_opt(input.currency),
            metadata=_opt(input.metadata),
        )
        try:
            model = await service.upsert_customer(rt.db, await rt.clock.now(), data)
        except (UserInputError, UserInputErrors) as exc:
            return CustomerPayload(customer=None, user_errors=user_errors(exc, ["input"]))
        return CustomerPayload(customer=Customer(model=model), user_errors=[])

    @typed.mutation(
        scope=Scope.ADMIN, description="Admin. A short-lived token for one customer's frontend."
    )
    async def create_customer_session(
        self, info: Info, customer_id: strawberry.ID, ttl_seconds: int | None = 3600
    ) -> CustomerSessionPayload:
        require_admin(info)
        try:
            session = await service.create_session(
                info.context.runtime.db,
                service.parse_uuid(customer_id),
                ttl_seconds if ttl_seconds is not None else 3600,
            )
        except UserInputError as exc:
            return CustomerSessionPayload(token=None, expires_at=None, user_errors=user_errors(exc))
        return CustomerSessionPayload(
            token=session.token, expires_at=session.expires_at, user_errors=[]
        )

    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin. End every session token of a customer now: requests carrying one "
        "are UNAUTHENTICATED, and its open WebSockets close with 4401.",
    )
    async def revoke_customer_sessions(
        self, info: Info, customer_id: strawberry.ID
    ) -> RevokeCustomerSessionsPayload:
        require_admin(info)
        try:
            revoked = await service.revoke_sessions(
                info.context.runtime.db, service.parse_uuid(customer_id)
            )
        except UserInputError as exc:
            return RevokeCustomerSessionsPayload(revoked=None, user_errors=user_errors(exc))
        return RevokeCustomerSessionsPayload(revoked=revoked, user_errors=[])
