"""Reading one page of a newest-first Relay connection ordered by (timestamp, id)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.graphql.errors import InvalidInput

__all__ = ["Page", "PageRequest", "fetch_page", "page_request"]

DEFAULT_PAGE = 50
MAX_PAGE = 100
"""docs/api.md#pagination: ``first`` at most 100 (more is clamped)."""


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: tuple[datetime, UUID] | None


def page_request(first: int | None, after: str | None) -> PageRequest:
    """Validate ``first`` (0-100; more is clamped; null is 50) and ``after``; INVALID_INPUT
    otherwise."""
    if first is not None and first < 0:
        raise InvalidInput("first must not be negative")
    size = DEFAULT_PAGE if first is None else min(first, MAX_PAGE)
    return PageRequest(size, None if after is None else _decode_cursor(after))


def _encode_cursor(position: datetime, id: UUID) -> str:
    """An opaque cursor naming a row of a newest-first page ordered by (timestamp, id)."""
    raw = json.dumps([position.isoformat(), str(id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The position an ``after`` cursor names; INVALID_INPUT for a malformed one."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position, id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(position), UUID(str(id))
    except (ValueError, TypeError, binascii.Error):
        raise InvalidInput("malformed cursor") from None


@dataclass(frozen=True)
class Page:
    rows: list[asyncpg.Record]
    cursors: list[str]
    has_next: bool
    has_previous: bool


async def fetch_page(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    table: str,
    order_column: str,
    where: Sequence[str],
    args: Sequence[Any],
    request: PageRequest,
) -> Page:
    """``SELECT *`` from ``table`` newest first by (``order_column``, id), after the cursor.

    ``where`` holds trusted SQL conditions using ``$1 … $n`` for ``args``.
    """
    conditions = list(where)
    params = list(args)
    if request.after is not None:
        params.extend(request.after)
        conditions.append(
            f"({order_column}, id) < (${len(params) - 1}::timestamptz, ${len(params)}::uuid)"
        )
    params.append(request.size + 1)
    sql = (
        f"SELECT * FROM {table} WHERE {' AND '.join(conditions) or 'true'} "  # noqa: S608
        f"ORDER BY {order_column} DESC, id DESC LIMIT ${len(params)}"
    )
    rows = list(await conn.fetch(sql, *params))
    has_next = len(rows) > request.size
    rows = rows[: request.size]
    cursors = [_encode_cursor(r[order_column], r["id"]) for r in rows]
    return Page(rows, cursors, has_next, request.after is not None)
