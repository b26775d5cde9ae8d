"""Recording mutations in the audit log, in the mutation's own transaction.

:func:`audited` wraps a mutation resolver (``graphql.scopes.Guard``): for a call made with a
key or a customer session token it sets :data:`billing_gql.db.database.transaction_hook`, so
the first transaction the mutation commits (``Database.transaction``, or a hot single
statement carrying the row as a CTE: ``TransactionHook.statement``, a usage batch) writes the
audit row before its COMMIT — the row and the effect commit together or not at all. When the
resolver returns, the row's result is completed if it is not ``ok`` (``user_errors`` with their
codes, ``error`` with the GraphQL error code); a mutation that committed nothing (refused input,
an auth refusal) gets its row then, on its own. A mutation whose effect spans several
transactions (``createCheckout``: the claim, then the provider's answer; ``advanceClock``: each
sweep) has its row in the first of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID, uuid4

import asyncpg
from graphql import GraphQLError
from graphql.execution.values import VariableValues, get_argument_values
from strawberry.types import Info as StrawberryInfo

from billing_gql.access.audit import (
    AuditDraft,
    entry_statement,
    insert_entry,
    redact,
    set_result,
)
from billing_gql.db.database import transaction_hook
from billing_gql.graphql.context import Context
from billing_gql.graphql.errors import ApiError, GraphQLErrorCode

__all__ = ["AuditCall", "audited"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class AuditCall:
    """One mutation call being recorded (a :class:`~billing_gql.db.database.TransactionHook`)."""

    def __init__(self, context: Context, draft: AuditDraft) -> None:
        self.context = context
        self.draft = draft
        self.owner: asyncio.Task[Any] | None = asyncio.current_task()
        self.entry_id: UUID | None = None
        """The row's id once the transaction that wrote it committed."""
        self._id = uuid4()
        self._token = transaction_hook.set(self)

    @classmethod
    def start(
        cls, context: Context, field: str, operation_name: str | None, arguments: Any
    ) -> AuditCall | None:
        """Begin recording a call, or ``None`` for a caller that is not recorded (anonymous,
        or a bad credential: no one to name)."""
        viewer = context.viewer
        if viewer.kind not in ("admin", "key", "customer"):
            return None
        if viewer.kind == "customer":
            kind, actor, label = "customer", str(viewer.customer_id), None
        else:
            kind = "api_key" if viewer.kind == "key" else "admin_key"
            actor, label = viewer.key_id or "BILLING_GQL_ADMIN_KEYS", viewer.key_prefix
        draft = AuditDraft(
            actor_kind=kind,
            actor=actor,
            actor_label=label,
            field=field,
            operation_name=operation_name,
            arguments=redact(arguments),
            request_id=context.request_id,
        )
        return cls(context, draft)

    @property
    def done(self) -> bool:
        return self.entry_id is not None

    async def before_commit(self, conn: asyncpg.Connection) -> bool:
        if self.entry_id is not None:
            return False
        await insert_entry(conn, self.draft, self._id)
        return True

    def statement(self, first_param: int) -> tuple[str, list[Any]]:
        return entry_statement(self.draft, self._id, first_param)

    def committed(self) -> None:
        self.entry_id = self._id

    def abandon(self) -> None:
        """Stop recording without writing (the call is handed to another path that records it)."""
        transaction_hook.reset(self._token)

    async def finish(self, result: str, codes: list[str]) -> None:
        """The call returned ``result`` (``ok``, ``user_errors``, ``error``): complete or write
        its row. A failure to write is logged, never raised over the mutation's answer."""
        transaction_hook.reset(self._token)
        db = self.context.runtime.db
        try:
            if self.entry_id is None:
                self.draft.result, self.draft.error_codes = result, codes
                await insert_entry(db.pool, self.draft, self._id)
            elif result != "ok":
                await set_result(db, self.entry_id, result, codes)
        except Exception:
            log.exception("could not write the audit record of %s", self.draft.field)

    async def finish_with(self, payload: Any) -> None:
        """:meth:`finish` from a mutation payload (its ``user_errors``)."""
        codes = [str(getattr(e.code, "value", e.code)) for e in getattr(payload, "user_errors", [])]
        await self.finish("user_errors" if codes else "ok", codes)

    async def finish_error(self, error: BaseException) -> None:
        """:meth:`finish` from an exception the resolver raised."""
        code = GraphQLErrorCode.INTERNAL_SERVER_ERROR.value
        if isinstance(error, ApiError):
            code = error.code.value
        elif isinstance(error, GraphQLError):
            code = str((error.extensions or {}).get("code") or code)
        await self.finish("error", [code])


def _arguments(info: StrawberryInfo) -> dict[str, Any]:
    """The field's arguments as GraphQL coerced them, by their GraphQL names."""
    raw = info._raw_info
    try:
        definition = raw.parent_type.fields[raw.field_name]
        variables: Any = raw.variable_values
        if not isinstance(variables, VariableValues):  # Strawberry's execution keeps a dict
            variables = VariableValues(sources={}, coerced=dict(variables))
        return get_argument_values(definition, raw.field_nodes[0], variables)
    except Exception:  # arguments that failed coercion never reach a resolver
        return {}


async def audited(info: StrawberryInfo, call: Callable[[], Awaitable[T]]) -> T:
    """Run a mutation resolver, recording it in the audit log."""
    context: Context = info.context
    field = info.field_name
    if field in context.audited:  # a fast path ran and recorded it (recordUsage's bulk path)
        context.audited.discard(field)
        return await call()
    operation = info._raw_info.operation
    record = AuditCall.start(
        context, field, operation.name.value if operation.name else None, _arguments(info)
    )
    if record is None:
        return await call()
    try:
        result = await call()
    except BaseException as error:
        await record.finish_error(error)
        raise
    await record.finish_with(result)
    return result
