"""Operator access's GraphQL face (admin): API keys and the audit log.

createApiKey, apiKeys, rotateApiKey, revokeApiKey; auditLog.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry
from strawberry.scalars import JSON

from billing_gql.access import keys
from billing_gql.access.keys import ApiKeyRecord
from billing_gql.core.scopes import Scope
from billing_gql.customers.service import parse_uuid
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.graphql import typed
from billing_gql.graphql.auth import require_admin
from billing_gql.graphql.common import Connection
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import InvalidInput, UserError, user_errors
from billing_gql.graphql.pages import fetch_page, page_request

ApiKeyScope = strawberry.enum(
    Scope,
    name="ApiKeyScope",
    description="What an API key may call: ADMIN everything; READ every query (but apiKeys, "
    "auditLog, exportCustomerData, webhookEndpoints); USAGE_WRITE recordUsage; ENTITLEMENTS_READ "
    "entitlement and entitlements; WEBHOOKS_MANAGE outgoing webhook endpoints and "
    "replayWebhookDelivery.",
)


@strawberry.type(
    description="An API key (its secret is shown once, by createApiKey and rotateApiKey)."
)
class ApiKey:
    model: strawberry.Private[ApiKeyRecord]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.id))

    @strawberry.field
    def name(self) -> str:
        return self.model.name

    @strawberry.field
    def scopes(self) -> list[ApiKeyScope]:  # type: ignore[valid-type]
        return [Scope(s) for s in self.model.scopes]

    @typed.field(description="The secret's visible start (bgk_ and 8 characters): names the key.")
    def prefix(self) -> str:
        return self.model.prefix

    @strawberry.field
    def expires_at(self) -> datetime | None:
        return self.model.expires_at

    @strawberry.field
    def created_at(self) -> datetime:
        return self.model.created_at

    @typed.field(description="When a request last used it (to the minute).")
    def last_used_at(self) -> datetime | None:
        return self.model.last_used_at

    @strawberry.field
    def revoked_at(self) -> datetime | None:
        return self.model.revoked_at


@strawberry.input
class CreateApiKeyInput:
    name: str
    scopes: list[ApiKeyScope]  # type: ignore[valid-type]
    expires_at: datetime | None = strawberry.field(
        default=None, description="Optional; the key stops working then (wall clock)."
    )


@strawberry.type
class ApiKeyPayload:
    api_key: ApiKey | None
    secret: str | None = strawberry.field(
        description="createApiKey, rotateApiKey: the secret, shown this once (send it as "
        "Authorization: Bearer <secret>)."
    )
    user_errors: list[UserError]


class AuditResultValue(Enum):
    OK = "ok"
    USER_ERRORS = "user_errors"
    ERROR = "error"


AuditResult = strawberry.enum(AuditResultValue, name="AuditResult")


@strawberry.type(description="One mutation called with an API key or a customer session token.")
class AuditEntry:
    id: strawberry.ID
    at: datetime
    actor_kind: str = strawberry.field(description="admin_key, api_key or customer.")
    actor: str = strawberry.field(
        description="The key's id (BILLING_GQL_ADMIN_KEYS[i] for a bootstrap key) or the "
        "customer's id."
    )
    actor_label: str | None = strawberry.field(description="The key's prefix.")
    field: str = strawberry.field(description="The mutation field, e.g. createPlan.")
    operation_name: str | None
    arguments: JSON = strawberry.field(
        description="As sent, secret-like fields [redacted], long lists cut."
    )
    result: AuditResult  # type: ignore[valid-type]
    error_codes: list[str] = strawberry.field(
        description="The userErrors codes, or the GraphQL error's code."
    )
    request_id: str | None


@strawberry.input
class AuditLogFilter:
    actor: str | None = strawberry.field(
        default=None, description="A key's id or prefix, a customer's id."
    )
    field: str | None = None
    from_: datetime | None = strawberry.field(default=None, name="from")
    to: datetime | None = strawberry.field(default=None, description="Exclusive.")


def _payload(record: ApiKeyRecord, secret: str | None = None) -> ApiKeyPayload:
    return ApiKeyPayload(api_key=ApiKey(model=record), secret=secret, user_errors=[])


def _refused(exc: UserInputError | UserInputErrors, prefix: list[str]) -> ApiKeyPayload:
    return ApiKeyPayload(api_key=None, secret=None, user_errors=user_errors(exc, prefix))


@strawberry.type
class AccessQuery:
    @typed.field(scope=Scope.ADMIN, description="Admin. Every API key, newest first.")
    async def api_keys(self, info: Info, include_revoked: bool = False) -> list[ApiKey]:
        require_admin(info)
        found = await keys.list_keys(info.context.runtime.db, include_revoked=include_revoked)
        return [ApiKey(model=k) for k in found]

    @typed.field(
        scope=Scope.ADMIN,
        description="Admin. Mutations called with a key or a session token, newest first.",
    )
    async def audit_log(
        self,
        info: Info,
        filter: AuditLogFilter | None = None,
        first: int | None = 50,
        after: str | None = None,
    ) -> Connection[AuditEntry]:
        require_admin(info)
        request = page_request(first, after)
        where: list[str] = []
        args: list[object] = []
        if filter is not None:
            if "\x00" in (filter.actor or "") + (filter.field or ""):
                raise InvalidInput("filter.actor and filter.field cannot contain NUL")
            if filter.actor is not None:
                args.append(filter.actor)
                where.append(f"(actor = ${len(args)} OR actor_label = ${len(args)})")
            if filter.field is not None:
                args.append(filter.field)
                where.append(f"field = ${len(args)}")
            if filter.from_ is not None:
                args.append(filter.from_)
                where.append(f"at >= ${len(args)}")
            if filter.to is not None:
                args.append(filter.to)
                where.append(f"at < ${len(args)}")
        page = await fetch_page(
            info.context.runtime.db.pool,
            table="audit_log",
            order_column="at",
            where=where,
            args=args,
            request=request,
        )
        return Connection.of(
            page,
            lambda r: AuditEntry(
                id=strawberry.ID(str(r["id"])),
                at=r["at"],
                actor_kind=r["actor_kind"],
                actor=r["actor"],
                actor_label=r["actor_label"],
                field=r["field"],
                operation_name=r["operation_name"],
                arguments=r["arguments"],
                result=AuditResultValue(r["result"]),
                error_codes=list(r["error_codes"]),
                request_id=r["request_id"],
            ),
        )


@strawberry.type
class AccessMutation:
    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin. A new API key with its scopes; the payload shows its secret once.",
    )
    async def create_api_key(self, info: Info, input: CreateApiKeyInput) -> ApiKeyPayload:
        require_admin(info)
        try:
            record, secret = await keys.create_key(
                info.context.runtime.db,
                name=input.name,
                scopes=[Scope(s).value for s in input.scopes],
                expires_at=input.expires_at,
            )
        except (UserInputError, UserInputErrors) as exc:
            return _refused(exc, ["input"])
        return _payload(record, secret)

    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin. A new secret for a key (shown once); the old one stops working now.",
    )
    async def rotate_api_key(self, info: Info, id: strawberry.ID) -> ApiKeyPayload:
        require_admin(info)
        try:
            record, secret = await keys.rotate_key(info.context.runtime.db, parse_uuid(id))
        except UserInputError as exc:
            return _refused(exc, [])
        return _payload(record, secret)

    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin. Revoke a key now (in every server process). Idempotent.",
    )
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> ApiKeyPayload:
        require_admin(info)
        try:
            record = await keys.revoke_key(info.context.runtime.db, parse_uuid(id))
        except UserInputError as exc:
            return _refused(exc, [])
        return _payload(record)
