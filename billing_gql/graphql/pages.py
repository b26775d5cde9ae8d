"""Reading one page of a newest-first Relay connection ordered by (timestamp, id)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.graphql.common import decode_cursor, encode_cursor, page_size
from billing_gql.graphql.errors import InvalidInput

__all__ = ["Page", "PageRequest", "fetch_page", "page_request"]


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: tuple[datetime, UUID] | None


def page_request(first: int | None, after: str | None) -> PageRequest:
    """Validate ``first`` (0-100; more is clamped) and ``after``; INVALID_INPUT otherwise."""
    try:
        size = page_size(first)
        cursor = decode_cursor(after)
        position = (cursor[0], UUID(cursor[1])) if cursor else None
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return PageRequest(size, position)


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
    cursors = [encode_cursor(r[order_column], r["id"]) for r in rows]
    return Page(rows, cursors, has_next, request.after is not None)
