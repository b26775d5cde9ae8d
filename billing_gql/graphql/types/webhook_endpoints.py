"""Outgoing webhook endpoints' GraphQL face: createWebhookEndpoint, webhookEndpoints,
deleteWebhookEndpoint (all admin)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from billing_gql.core.scopes import Scope
from billing_gql.customers.service import parse_uuid
from billing_gql.errors import ErrorCode, UserInputError, UserInputErrors
from billing_gql.events import outgoing_webhooks as outgoing
from billing_gql.graphql import typed
from billing_gql.graphql.auth import require_admin
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import UserError, user_errors


@strawberry.type(description="An app URL that receives domain events (Standard Webhooks).")
class WebhookEndpoint:
    model: strawberry.Private[outgoing.Endpoint]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.id))

    @strawberry.field
    def url(self) -> str:
        return self.model.url

    @typed.field(description='Event types it receives: exact, a prefix ending in ".*", or "*".')
    def events(self) -> list[str]:
        return list(self.model.events)

    @strawberry.field
    def enabled(self) -> bool:
        return self.model.enabled

    @strawberry.field
    def created_at(self) -> datetime:
        return self.model.created_at


@strawberry.input
class CreateWebhookEndpointInput:
    url: str
    events: list[str]


@strawberry.type
class WebhookEndpointPayload:
    endpoint: WebhookEndpoint | None
    secret: str | None = strawberry.field(
        description="The signing secret (whsec_…), shown only by createWebhookEndpoint."
    )
    user_errors: list[UserError]


@strawberry.type
class WebhookEndpointQuery:
    @typed.field(
        scope=Scope.WEBHOOKS_MANAGE,
        description="Admin. The outgoing webhook endpoints, newest first.",
    )
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpoint]:
        require_admin(info)
        found = await outgoing.list_endpoints(info.context.runtime.db)
        return [WebhookEndpoint(model=e) for e in found]


@strawberry.type
class WebhookEndpointMutation:
    @typed.mutation(
        scope=Scope.WEBHOOKS_MANAGE,
        description="Admin. Register a URL for domain events (Standard Webhooks signatures); "
        "the payload shows its signing secret once.",
    )
    async def create_webhook_endpoint(
        self, info: Info, input: CreateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        require_admin(info)
        rt = info.context.runtime
        try:
            created = await outgoing.create_endpoint(
                rt.db,
                await rt.clock.now(),
                input.url,
                input.events,
                allow_private=rt.settings.outbound.allow_private_webhook_targets,
            )
        except (UserInputError, UserInputErrors) as exc:
            return WebhookEndpointPayload(
                endpoint=None, secret=None, user_errors=user_errors(exc, ["input"])
            )
        return WebhookEndpointPayload(
            endpoint=WebhookEndpoint(model=created.endpoint),
            secret=created.secret,
            user_errors=[],
        )

    @typed.mutation(
        scope=Scope.WEBHOOKS_MANAGE,
        description="Admin. Remove an endpoint; its undelivered messages are dropped.",
    )
    async def delete_webhook_endpoint(
        self, info: Info, id: strawberry.ID
    ) -> WebhookEndpointPayload:
        require_admin(info)
        endpoint_id = parse_uuid(id)
        deleted = (
            await outgoing.delete_endpoint(info.context.runtime.db, endpoint_id)
            if endpoint_id is not None
            else None
        )
        if deleted is None:
            return WebhookEndpointPayload(
                endpoint=None,
                secret=None,
                user_errors=[
                    UserError(field=["id"], message="no such endpoint", code=ErrorCode.NOT_FOUND)
                ],
            )
        return WebhookEndpointPayload(
            endpoint=WebhookEndpoint(model=deleted), secret=None, user_errors=[]
        )
