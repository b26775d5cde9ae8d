"""The provider inbox's GraphQL face (admin): webhookDeliveries, replayWebhookDelivery."""

from __future__ import annotations

from datetime import datetime

import strawberry

from billing_gql.core.scopes import Scope
from billing_gql.customers.service import parse_uuid
from billing_gql.errors import ErrorCode
from billing_gql.graphql import typed
from billing_gql.graphql.auth import require_admin
from billing_gql.graphql.common import Connection
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import UserError
from billing_gql.graphql.pages import fetch_page, page_request
from billing_gql.provider_webhooks.apply import (
    Delivery,
    DeliveryStatus,
    delivery_from_row,
    replay_delivery,
)

WebhookDeliveryStatus = strawberry.enum(
    DeliveryStatus, name="WebhookDeliveryStatus", graphql_name_from="value"
)


@strawberry.type(description="A provider delivery in the inbox.")
class WebhookDelivery:
    model: strawberry.Private[Delivery]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.id))

    @strawberry.field
    def provider(self) -> str:
        return self.model.provider

    @strawberry.field
    def event_id(self) -> str:
        return self.model.event_id

    @strawberry.field
    def event_type(self) -> str | None:
        return self.model.event_type

    @typed.field(description="received, applied, failed or ignored.")
    def status(self) -> WebhookDeliveryStatus:  # type: ignore[valid-type]
        return self.model.status

    @strawberry.field
    def attempts(self) -> int:
        return self.model.attempts

    @typed.field(description="Why the last attempt failed.")
    def error(self) -> str | None:
        return self.model.error

    @strawberry.field
    def received_at(self) -> datetime:
        return self.model.received_at

    @strawberry.field
    def applied_at(self) -> datetime | None:
        return self.model.applied_at

    @typed.field(description="When the worker tries a failed delivery again.")
    def next_attempt_at(self) -> datetime | None:
        return self.model.next_attempt_at


@strawberry.type
class WebhookDeliveryPayload:
    delivery: WebhookDelivery | None
    user_errors: list[UserError]


@strawberry.type
class WebhookQuery:
    @typed.field(scope=Scope.READ, description="Admin. The provider inbox, newest first.")
    async def webhook_deliveries(
        self,
        info: Info,
        provider: str | None = None,
        status: str | None = None,
        first: int | None = 50,
        after: str | None = None,
    ) -> Connection[WebhookDelivery]:
        require_admin(info)
        request = page_request(first, after)
        where: list[str] = []
        args: list[object] = []
        if provider is not None:
            args.append(provider.strip().lower())
            where.append(f"provider = ${len(args)}")
        if status is not None:
            args.append(status.strip().lower())
            where.append(f"status = ${len(args)}")
        page = await fetch_page(
            info.context.runtime.db.pool,
            table="webhook_deliveries",
            order_column="received_at",
            where=where,
            args=args,
            request=request,
        )
        return Connection.of(page, lambda r: WebhookDelivery(model=delivery_from_row(r)))


@strawberry.type
class WebhookMutation:
    @typed.mutation(
        scope=Scope.WEBHOOKS_MANAGE,
        description="Admin. Apply a stored delivery again now; a no-op for one "
        "already applied or ignored.",
    )
    async def replay_webhook_delivery(
        self, info: Info, id: strawberry.ID
    ) -> WebhookDeliveryPayload:
        require_admin(info)
        uid = parse_uuid(id)
        delivery = await replay_delivery(info.context.runtime, uid) if uid else None
        if delivery is None:
            return WebhookDeliveryPayload(
                delivery=None,
                user_errors=[
                    UserError(field=["id"], message="no such delivery", code=ErrorCode.NOT_FOUND)
                ],
            )
        return WebhookDeliveryPayload(delivery=WebhookDelivery(model=delivery), user_errors=[])
