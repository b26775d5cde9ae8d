"""The database handle every service uses: one asyncpg pool, JSON codecs, transactions.

Services write SQL against the Piccolo-defined tables directly on asyncpg: constraints
(``ON CONFLICT``, ``FOR UPDATE``) and the hot paths stay explicit and cheap. Piccolo owns the
schema definition and the migrations.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from billing_gql.settings import DatabaseSettings

log = logging.getLogger(__name__)

Connection = asyncpg.Connection
Record = asyncpg.Record


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: object) -> str:
    """JSON for jsonb columns: compact, Decimals as strings, never NaN."""
    return json.dumps(value, default=_json_default, separators=(",", ":"), allow_nan=False)


class TransactionHook(Protocol):
    """Work that must commit with the first transaction a task opens (the audit row of the
    mutation in progress, see ``billing_gql.graphql.audit``)."""

    owner: asyncio.Task[Any] | None
    """The task whose transactions it joins (tasks spawned meanwhile copy the context but
    their transactions are not the mutation's)."""

    @property
    def done(self) -> bool:
        """It has written (in a transaction that committed)."""

    async def before_commit(self, conn: asyncpg.Connection) -> bool:
        """Run inside the transaction, just before it commits; ``True`` when it wrote."""

    def statement(self, first_param: int) -> tuple[str, list[Any]]:
        """Its write as a data-modifying CTE (``name AS (INSERT …)``) numbering its parameters
        from ``$first_param``, for a hot single statement to carry (:func:`pending_hook`)."""

    def committed(self) -> None:
        """The transaction its :meth:`before_commit` (or :meth:`statement`) wrote in has
        committed."""


transaction_hook: ContextVar[TransactionHook | None] = ContextVar(
    "billing_gql_transaction_hook", default=None
)
"""Set by the GraphQL layer around a mutation; :meth:`Database.transaction` lets it write in
the mutation's own transaction, and a hot single-statement write (a usage batch) carries its
:meth:`TransactionHook.statement` as a CTE (:func:`pending_hook`)."""


def pending_hook() -> TransactionHook | None:
    """The hook of the mutation this task is running, if it has not written yet."""
    hook = transaction_hook.get()
    if hook is None or hook.done or hook.owner is not asyncio.current_task():
        return None
    return hook


async def _release(conn: asyncpg.Connection) -> None:
    """What the pool does to a released connection beyond rolling back an open transaction
    (asyncpg always does that): nothing. asyncpg's default reset (``RESET ALL``, ``UNLISTEN``,
    ``CLOSE ALL``, advisory unlocks) costs a round trip on every release — a second statement
    on every entitlement check. Our pooled connections carry no session state: nothing SETs a
    session variable, LISTENs (the listener has its own connection), or leaves a session
    advisory lock held past its ``finally``."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=dumps, decoder=json.loads, schema="pg_catalog")


class Database:
    """An asyncpg pool with the codecs billing-gql uses."""

    def __init__(self, url: str, pool: asyncpg.Pool, embedded: Any = None) -> None:
        self.url = url
        self.pool = pool
        self._embedded = embedded

    @classmethod
    async def connect(
        cls, url: str, *, min_size: int = 2, max_size: int = 10, embedded: Any = None
    ) -> Database:
        """Open a pool on ``url``."""
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_release,
            server_settings={"application_name": "billing-gql", "timezone": "UTC"},
        )
        return cls(url, pool, embedded)

    async def close(self) -> None:
        """Close the pool and release the embedded server if this handle started it."""
        await self.pool.close()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, outside any transaction."""
        async with self.pool.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(
        self, *, isolation: str = "read_committed"
    ) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside one transaction, committed when the block succeeds.

        A pending :data:`transaction_hook` (the audit row of the mutation being run) writes in
        it, before the commit: the record and the effect commit together or not at all."""
        hook = pending_hook()
        async with self.pool.acquire() as conn:
            async with conn.transaction(isolation=isolation):
                yield conn
                wrote = hook is not None and await hook.before_commit(conn)
            if wrote and hook is not None:
                hook.committed()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.pool.fetch(sql, *args)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.pool.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.pool.fetchval(sql, *args)

    async def fetch_time(self, sql: str, *args: Any) -> datetime | None:
        """The single value ``sql`` selects when it is a time (``min(...)`` of the next due
        moment), else ``None`` (no row, or a NULL minimum)."""
        value = await self.pool.fetchval(sql, *args)
        return value if isinstance(value, datetime) else None

    async def execute(self, sql: str, *args: Any) -> str:
        return await self.pool.execute(sql, *args)  # type: ignore[no-any-return]


async def resolve_url(settings: DatabaseSettings) -> tuple[str, Any]:
    """The database URL to use, starting the embedded server when none is configured."""
    if settings.url:
        return settings.url, None
    from billing_gql.db.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.data_dir)
    url = await embedded.start_async()
    return url, embedded


async def connect_database(settings: DatabaseSettings) -> Database:
    """Connect as configured: ``DATABASE_URL``, or the embedded PostgreSQL."""
    url, embedded = await resolve_url(settings)
    return await Database.connect(
        url, min_size=settings.pool_min_size, max_size=settings.pool_max_size, embedded=embedded
    )
