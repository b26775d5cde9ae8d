"""Customer use cases: upsert by external id, sessions (tokens), lookups."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from billing_gql.core.customers import Customer, CustomerSession, customer_from_row
from billing_gql.db.database import Database
from billing_gql.errors import UserInputError
from billing_gql.events.notify import SESSION_CHANNEL
from billing_gql.validation import OMITTED, Omitted, Problems

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext

TOKEN_PREFIX = "bgcs_"  # noqa: S105 - a prefix, not a secret
MAX_SESSION_SECONDS = 30 * 24 * 3600
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class CustomerUpsert:
    """``OMITTED`` keeps the stored value; ``None`` clears it; ``metadata`` is replaced whole."""

    external_id: str
    email: str | Omitted | None = OMITTED
    name: str | Omitted | None = OMITTED
    country: str | Omitted | None = OMITTED
    currency: str | Omitted | None = OMITTED
    metadata: Any = OMITTED


def parse_uuid(value: str | UUID | None) -> UUID | None:
    """A UUID from an opaque id string; ``None`` for anything that is not one."""
    if value is None or isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def upsert_customer(db: Database, now: datetime, data: CustomerUpsert) -> Customer:
    p = Problems()
    external_id = (data.external_id or "").strip()
    if not external_id or len(external_id) > 255:
        p.add("INVALID_INPUT", "externalId must be 1–255 characters", "externalId")
    fields: dict[str, Any] = {}
    if not isinstance(data.email, Omitted):
        if data.email is not None and not _EMAIL_RE.match(data.email.strip()):
            p.add("INVALID_INPUT", "email is not an email address", "email")
        fields["email"] = data.email.strip() if data.email else None
    if not isinstance(data.name, Omitted):
        fields["name"] = data.name
    if not isinstance(data.country, Omitted):
        country = data.country.strip().upper() if data.country else None
        if country is not None and not _COUNTRY_RE.match(country):
            p.add("INVALID_INPUT", "country is an ISO 3166 alpha-2 code such as VN", "country")
        fields["country"] = country
    if not isinstance(data.currency, Omitted):
        fields["currency"] = (
            p.currency(data.currency, "currency") if data.currency is not None else None
        )
    if not isinstance(data.metadata, Omitted):
        if data.metadata is not None and not isinstance(data.metadata, dict):
            p.add("INVALID_INPUT", "metadata must be a JSON object", "metadata")
        fields["metadata"] = data.metadata
    p.raise_if_any()
    columns = list(fields)
    insert_cols = ["external_id", *columns, "created_at", "updated_at"]
    placeholders = [f"${i}" for i in range(1, len(insert_cols) + 1)]
    updates = [f"{c} = EXCLUDED.{c}" for c in columns] + ["updated_at = EXCLUDED.updated_at"]
    sql = (
        f"INSERT INTO customers ({', '.join(insert_cols)}) VALUES ({', '.join(placeholders)}) "  # noqa: S608
        f"ON CONFLICT (external_id) DO UPDATE SET {', '.join(updates)} RETURNING *"
    )
    async with db.transaction() as conn:  # one statement; a transaction for the audit row
        row = await conn.fetchrow(sql, external_id, *fields.values(), now, now)
    return customer_from_row(row)


async def load_customers(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    ids: Sequence[UUID] | None = None,
    external_ids: Sequence[str] | None = None,
) -> list[Customer]:
    rows = await conn.fetch(
        "SELECT * FROM customers WHERE ($1::uuid[] IS NULL OR id = ANY($1::uuid[])) "
        "AND ($2::text[] IS NULL OR external_id = ANY($2::text[]))",
        list(ids) if ids is not None else None,
        list(external_ids) if external_ids is not None else None,
    )
    return [customer_from_row(r) for r in rows]


async def get_customer(
    db: Database, *, id: UUID | None = None, external_id: str | None = None
) -> Customer | None:
    if id is not None:
        found = await load_customers(db.pool, ids=[id])
    elif external_id is not None:
        found = await load_customers(db.pool, external_ids=[external_id])
    else:
        return None
    return found[0] if found else None


async def create_session(
    db: Database, customer_id: UUID | None, ttl_seconds: int
) -> CustomerSession:
    """A new customer session token (random, stored hashed, expiring on the wall clock)."""
    if ttl_seconds < 60 or ttl_seconds > MAX_SESSION_SECONDS:
        raise UserInputError(
            "INVALID_INPUT",
            f"ttlSeconds must be between 60 and {MAX_SESSION_SECONDS}",
            ["ttlSeconds"],
        )
    alive = (
        await db.fetchval("SELECT deleted_at IS NULL FROM customers WHERE id = $1", customer_id)
        if customer_id is not None
        else None
    )
    if alive is None or customer_id is None:
        raise UserInputError("NOT_FOUND", "no such customer", ["customerId"])
    if not alive:
        raise UserInputError("INVALID_STATE", "the customer was deleted", ["customerId"])
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    # Session tokens are security, not billing: they expire on the wall clock, not the test clock.
    created = datetime.now(UTC)
    expires = created + timedelta(seconds=ttl_seconds)
    async with db.transaction() as conn:  # one statement; a transaction for the audit row
        await conn.execute(
            "INSERT INTO customer_sessions (customer_id, token_hash, expires_at, created_at) "
            "VALUES ($1,$2,$3,$4)",
            customer_id,
            hash_token(token),
            expires,
            created,
        )
    return CustomerSession(token=token, expires_at=expires, customer_id=customer_id)


async def session_for_token(db: Database, token: str) -> tuple[UUID, datetime] | None:
    """(customer, expiry on the wall clock) of a live session token, else ``None`` — for
    connections that outlive a request (a WebSocket must end when its session does)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = await db.fetchrow(
        "SELECT customer_id, expires_at FROM customer_sessions "
        "WHERE token_hash = $1 AND expires_at > now()",
        hash_token(token),
    )
    if row is None:
        return None
    return row["customer_id"], row["expires_at"]


async def revoke_sessions(db: Database, customer_id: UUID | None) -> int:
    """End every session token of a customer at once; return how many were still live.

    The tokens are deleted (a request carrying one is UNAUTHENTICATED from the commit on) and
    the customer's id is notified on :data:`SESSION_CHANNEL`, so every server process closes
    the customer's open WebSockets.
    """
    async with db.transaction() as conn:
        if (
            customer_id is None
            or await conn.fetchval("SELECT 1 FROM customers WHERE id = $1", customer_id) is None
        ):
            raise UserInputError("NOT_FOUND", "no such customer", ["customerId"])
        revoked: int = await conn.fetchval(
            "WITH gone AS (DELETE FROM customer_sessions WHERE customer_id = $1 "
            "RETURNING expires_at) SELECT count(*) FILTER (WHERE expires_at > now()) FROM gone",
            customer_id,
        )
        await conn.execute("SELECT pg_notify($1, $2)", SESSION_CHANNEL, str(customer_id))
    return revoked


async def delete_expired_sessions(runtime: ServiceContext, now: datetime) -> int:
    """Sweep: delete session tokens past their expiry. Sessions expire on the wall clock, so
    the database's ``now()`` decides, not the billing time ``now``."""
    status = await runtime.db.execute("DELETE FROM customer_sessions WHERE expires_at <= now()")
    return int(status.rsplit(" ", 1)[-1])
