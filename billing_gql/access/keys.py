"""Scoped API keys: created, listed, rotated and revoked by admins; looked up per request.

A key's secret is ``bgk_`` + 8 hex characters (its visible **prefix**, unique, which names it
in lists and in the audit log) + ``_`` + 43 random URL-safe characters (256 bits). Only the
SHA-256 of the whole secret is stored — a plain hash is enough for a secret of that entropy
(nothing to brute-force) — and compared in constant time after the row is found by its
prefix. The secret is shown once, at creation or rotation. Keys expire on the wall clock
(security, not billing). Revocation and rotation act at once in every server process: each
request reads the key's row (one indexed statement), nothing is cached; WebSockets the key
opened end at once too (its id is notified on the sessions' channel).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from billing_gql.core.scopes import ALL_SCOPES
from billing_gql.db.database import Database
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.events.notify import SESSION_CHANNEL
from billing_gql.money import shown

__all__ = [
    "SECRET_PREFIX",
    "ApiKeyRecord",
    "KeyPrincipal",
    "create_key",
    "key_for_secret",
    "list_keys",
    "revoke_key",
    "rotate_key",
]

SECRET_PREFIX = "bgk_"  # noqa: S105 - a prefix, not a secret
_PREFIX_LENGTH = len(SECRET_PREFIX) + 8
_SHAPE = re.compile(r"bgk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")
"""What a secret looks like (anything else is no key, without a database round trip)."""
MAX_NAME = 200
TOUCH_EVERY = timedelta(seconds=60)
"""``lastUsedAt`` is written at most this often per key (a write per request would cost)."""

_COLUMNS = "id, name, scopes, prefix, created_at, expires_at, last_used_at, revoked_at"


@dataclass(frozen=True)
class ApiKeyRecord:
    id: UUID
    name: str
    scopes: tuple[str, ...]
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class KeyPrincipal:
    """A live key, as a request authenticated by it sees it."""

    id: UUID
    prefix: str
    scopes: tuple[str, ...]


def _record(row: asyncpg.Record) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        scopes=tuple(row["scopes"]),
        prefix=row["prefix"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _new_secret() -> tuple[str, str]:
    """(secret, its prefix)."""
    prefix = SECRET_PREFIX + secrets.token_hex(4)
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


def _validate(
    name: str, scopes: Iterable[str], expires_at: datetime | None
) -> tuple[str, list[str]]:
    errors: list[UserInputError] = []
    clean = name.strip()
    if not clean or len(clean) > MAX_NAME or not clean.isprintable():
        errors.append(
            UserInputError(
                "INVALID_INPUT",
                f"name must be 1 to {MAX_NAME} printable characters",
                ["name"],
            )
        )
    chosen: list[str] = []
    for scope in scopes:
        if scope not in ALL_SCOPES:
            known = ", ".join(sorted(ALL_SCOPES))
            errors.append(
                UserInputError(
                    "INVALID_INPUT", f"unknown scope {shown(scope)} (known: {known})", ["scopes"]
                )
            )
        elif scope not in chosen:
            chosen.append(scope)
    if not chosen and not any(e.field == ["scopes"] for e in errors):
        errors.append(UserInputError("INVALID_INPUT", "give at least one scope", ["scopes"]))
    if expires_at is not None and expires_at <= datetime.now(UTC):
        errors.append(
            UserInputError("INVALID_INPUT", "expiresAt must be in the future", ["expiresAt"])
        )
    if errors:
        raise UserInputErrors(errors)
    return clean, chosen


async def create_key(
    db: Database, *, name: str, scopes: Iterable[str], expires_at: datetime | None = None
) -> tuple[ApiKeyRecord, str]:
    """A new key and its secret (shown once).

    :raises UserInputErrors: INVALID_INPUT for an empty name, no or unknown scopes, or an
        expiry in the past.
    """
    clean, chosen = _validate(name, scopes, expires_at)
    secret, prefix = _new_secret()
    async with db.transaction() as conn:
        row = await conn.fetchrow(
            "INSERT INTO api_keys (name, scopes, prefix, secret_hash, created_at, expires_at) "  # noqa: S608
            f"VALUES ($1, $2, $3, $4, now(), $5) RETURNING {_COLUMNS}",
            clean,
            chosen,
            prefix,
            _hash(secret),
            expires_at,
        )
    return _record(row), secret


async def list_keys(db: Database, *, include_revoked: bool = True) -> list[ApiKeyRecord]:
    """Every key, newest first."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM api_keys "  # noqa: S608
        + ("" if include_revoked else "WHERE revoked_at IS NULL ")
        + "ORDER BY created_at DESC, id DESC"
    )
    return [_record(r) for r in rows]


async def rotate_key(db: Database, key_id: UUID | None) -> tuple[ApiKeyRecord, str]:
    """A new secret (and prefix) for a live key; the old secret stops working at the commit.

    :raises UserInputError: NOT_FOUND for an unknown key, INVALID_STATE for a revoked one.
    """
    secret, prefix = _new_secret()
    async with db.transaction() as conn:
        state = None
        if key_id is not None:
            state = await conn.fetchval(
                "SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1 FOR UPDATE", key_id
            )
        if state is None:
            raise UserInputError("NOT_FOUND", "no such API key", ["id"])
        if state:
            raise UserInputError("INVALID_STATE", "the key is revoked; create a new one", ["id"])
        row = await conn.fetchrow(
            f"UPDATE api_keys SET prefix = $2, secret_hash = $3, rotated_at = now() "  # noqa: S608
            f"WHERE id = $1 RETURNING {_COLUMNS}",
            key_id,
            prefix,
            _hash(secret),
        )
        await _notify(conn, key_id)
    return _record(row), secret


async def revoke_key(db: Database, key_id: UUID | None) -> ApiKeyRecord:
    """Revoke a key at once (idempotent: a revoked key keeps its first ``revoked_at``).

    :raises UserInputError: NOT_FOUND for an unknown key.
    """
    async with db.transaction() as conn:
        row = None
        if key_id is not None:
            row = await conn.fetchrow(
                f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "  # noqa: S608
                f"WHERE id = $1 RETURNING {_COLUMNS}",
                key_id,
            )
        if row is None:
            raise UserInputError("NOT_FOUND", "no such API key", ["id"])
        await _notify(conn, key_id)
    return _record(row)


async def _notify(conn: asyncpg.Connection, key_id: UUID | None) -> None:
    """Tell every server process (at the commit) that the key changed: its WebSockets end."""
    await conn.execute("SELECT pg_notify($1, $2)", SESSION_CHANNEL, str(key_id))


async def key_for_secret(db: Database, secret: str) -> KeyPrincipal | None:
    """The live key whose secret this is (not revoked, not expired), else ``None``.

    One indexed statement; a second, rarely, to move ``last_used_at`` (at most once a
    minute per key)."""
    if len(secret) > 200 or not _SHAPE.fullmatch(secret):
        return None
    row = await db.fetchrow(
        "SELECT id, scopes, secret_hash, last_used_at, now() AS now FROM api_keys "
        "WHERE prefix = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        secret[:_PREFIX_LENGTH],
    )
    if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), _hash(secret)):
        return None
    last = row["last_used_at"]
    if last is None or row["now"] - last >= TOUCH_EVERY:
        await db.execute(
            "UPDATE api_keys SET last_used_at = now() WHERE id = $1 "
            "AND (last_used_at IS NULL OR last_used_at <= now() - $2::interval)",
            row["id"],
            TOUCH_EVERY,
        )
    return KeyPrincipal(id=row["id"], prefix=secret[:_PREFIX_LENGTH], scopes=tuple(row["scopes"]))
