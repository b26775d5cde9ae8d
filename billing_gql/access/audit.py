"""The audit log: one row per mutation called with an API key or a customer session token.

A row says who (the key's id and prefix — ``BILLING_GQL_ADMIN_KEYS[i]`` for a bootstrap key
— or the customer's id), what (the mutation field, the request's operation name, its arguments
with secrets redacted), the result (``ok``, ``user_errors`` with their codes, or ``error`` with
the GraphQL error code), the request id and the time (wall clock, the database's).

The row is written inside the mutation's own transaction (``Database.transaction_hook``, set by
``billing_gql.graphql.audit``): it commits with the effect or not at all. A mutation that
commits nothing (refused input, an auth error) gets its row on its own when it returns; one
whose result is known only after its transaction committed gets the result completed then.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.db.database import Database

__all__ = ["AuditDraft", "entry_statement", "insert_entry", "redact", "set_result"]

REDACTED = "[redacted]"
MAX_LIST = 10
"""Lists longer than this keep their first items and a count (a usage batch has 1000)."""
MAX_TEXT = 1000
MAX_DEPTH = 8

_SECRET_NAME = re.compile(
    r"(secret|token|password|passwd|passphrase|card|cvc|cvv|credential|authorization|"
    r"signature|iban|account_?number|key$)",
    re.IGNORECASE,
)
"""Argument names whose values never reach the log (``apiKey``, ``cardNumber``,
``webhookSecret``, ``idempotencyKey``, …), at any depth."""


@functools.lru_cache(maxsize=1024)
def _is_secret(name: str) -> bool:
    """Whether an argument named ``name`` is kept out (names repeat: a batch's events)."""
    return _SECRET_NAME.search(name) is not None


@dataclass
class AuditDraft:
    actor_kind: str
    actor: str
    actor_label: str | None
    field: str
    operation_name: str | None
    arguments: Any
    request_id: str | None
    result: str = "ok"
    error_codes: list[str] = dataclasses.field(default_factory=list)


def redact(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of GraphQL argument values with secret-like fields replaced by
    ``[redacted]`` (by name, at any depth), long lists cut and long strings shortened."""
    if depth > MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        return {
            _text(str(k)): REDACTED if _is_secret(str(k)) else redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        kept = [redact(v, depth + 1) for v in value[:MAX_LIST]]
        if len(value) > MAX_LIST:
            kept.append(f"… {len(value) - MAX_LIST} more")
        return kept
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Enum):
        return redact(value.value, depth)
    if isinstance(value, Decimal | UUID | datetime | date):
        return str(value) if not isinstance(value, datetime | date) else value.isoformat()
    return _text(str(value))


def _text(value: str) -> str:
    """At most :data:`MAX_TEXT` characters, without NUL (which jsonb cannot hold)."""
    cut = value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"
    return cut.replace("\x00", "\ufffd")


_COLUMNS = (
    "id, at, actor_kind, actor, actor_label, field, operation_name, arguments, result, "
    "error_codes, request_id"
)


def _params(draft: AuditDraft, entry_id: UUID) -> list[Any]:
    return [
        entry_id,
        draft.actor_kind,
        draft.actor,
        draft.actor_label,
        draft.field,
        draft.operation_name,
        draft.arguments,
        draft.result,
        draft.error_codes,
        draft.request_id,
    ]


def _values(first: int) -> str:
    """``$first`` (the id), clock_timestamp() (at), then the other nine parameters."""
    rest = ", ".join(f"${first + i}" for i in range(1, 10))
    return f"${first}, clock_timestamp(), {rest}"


async def insert_entry(
    conn: asyncpg.Connection | asyncpg.Pool, draft: AuditDraft, entry_id: UUID
) -> None:
    """Write the row (on ``conn``: inside the caller's transaction)."""
    await conn.execute(
        f"INSERT INTO audit_log ({_COLUMNS}) VALUES ({_values(1)})",  # noqa: S608
        *_params(draft, entry_id),
    )


def entry_statement(draft: AuditDraft, entry_id: UUID, first_param: int) -> tuple[str, list[Any]]:
    """The row's insert as a data-modifying CTE named ``audit``, its parameters numbered from
    ``$first_param``: a single statement carrying it commits both or neither."""
    sql = f"audit AS (INSERT INTO audit_log ({_COLUMNS}) VALUES ({_values(first_param)}))"  # noqa: S608
    return sql, _params(draft, entry_id)


async def set_result(db: Database, entry_id: UUID, result: str, codes: list[str]) -> None:
    """Complete a row written in the mutation's transaction with the result it returned."""
    await db.execute(
        "UPDATE audit_log SET result = $2, error_codes = $3 WHERE id = $1", entry_id, result, codes
    )
