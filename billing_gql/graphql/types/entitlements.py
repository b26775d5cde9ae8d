"""Entitlements' GraphQL face: Entitlement, entitlement (the hot path), entitlements."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import strawberry

from billing_gql.core.scopes import Scope
from billing_gql.customers.service import parse_uuid
from billing_gql.entitlements import checks
from billing_gql.entitlements.service import Entitlement as EntitlementValue
from billing_gql.graphql import typed
from billing_gql.graphql.auth import require_customer_of, require_viewer_of
from billing_gql.graphql.context import Context, Info
from billing_gql.graphql.errors import Forbidden, InvalidInput
from billing_gql.graphql.types.customers import resolve_customer_id
from billing_gql.graphql.types.loaders import load_customer_entitlements


@strawberry.type(description="What a customer may use. remaining (and limit) null = unlimited.")
class Entitlement:
    feature: str
    enabled: bool
    limit: Decimal | None
    used: Decimal
    remaining: Decimal | None

    @classmethod
    def of(cls, value: EntitlementValue) -> Entitlement:
        return cls(
            feature=value.feature,
            enabled=value.enabled,
            limit=value.limit,
            used=value.used,
            remaining=value.remaining,
        )


async def check_entitlement(
    context: Context,
    customer_id: str | None,
    external_customer_id: str | None,
    feature: str,
) -> EntitlementValue:
    """The ``entitlement`` field's whole logic (auth included), shared with its fast path.

    :raises ApiError: UNAUTHENTICATED, FORBIDDEN or INVALID_INPUT.
    """
    viewer = require_viewer_of(context)
    if (customer_id is None) == (external_customer_id is None):
        raise InvalidInput("give exactly one of customerId and externalCustomerId")
    uid: UUID | None = None
    if customer_id is not None:
        uid = parse_uuid(customer_id)
        require_customer_of(context, uid)
        if uid is None:
            return EntitlementValue.none(feature)
    # The process's cache, else one statement resolving the customer (also by external id)
    # and its grants; a customer token naming someone else by external id is refused after it.
    found, value = await checks.check(
        context.runtime,
        feature=feature,
        customer_id=uid,
        external_id=external_customer_id if uid is None else None,
    )
    if not viewer.is_admin and found != viewer.customer_id:
        raise Forbidden("a customer token reaches only its own customer")
    return value


ENTITLEMENT_SCOPE = Scope.ENTITLEMENTS_READ
"""What ``entitlement`` declares (its fast path checks the same)."""


@strawberry.type
class EntitlementQuery:
    @typed.field(
        scope=ENTITLEMENT_SCOPE,
        description="Admin, or the customer itself. Exactly one of customerId and "
        "externalCustomerId. Unknown customers and features are simply not entitled.",
    )
    async def entitlement(
        self,
        info: Info,
        customer_id: strawberry.ID | None = None,
        external_customer_id: str | None = None,
        *,
        feature: str,
    ) -> Entitlement:
        return Entitlement.of(
            await check_entitlement(info.context, customer_id, external_customer_id, feature)
        )

    @typed.field(
        scope=Scope.ENTITLEMENTS_READ,
        description="Every feature the customer is granted. Admin, or itself.",
    )
    async def entitlements(
        self,
        info: Info,
        customer_id: strawberry.ID | None = None,
        external_customer_id: str | None = None,
    ) -> list[Entitlement]:
        uid = await resolve_customer_id(info, customer_id, external_customer_id)
        if uid is None:
            return []
        return [Entitlement.of(v) for v in await load_customer_entitlements(info, uid)]
