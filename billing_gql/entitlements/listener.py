"""The entitlement cache's listener: one dedicated asyncpg connection per process (not from the
pool) that LISTENs on ``billing_gql_entitlements`` and applies each notification to the cache.

The cache is live only while this connection is: it goes live (empty) once LISTEN is active,
and is emptied and bypassed the moment the connection is lost (asyncpg's termination callback)
or stops answering the keep-alive ``SELECT 1`` (a silently dead network path). The listener
then reconnects with a backoff (``RETRY_SECONDS`` doubling up to ``MAX_RETRY_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.entitlements.cache import EntitlementCache

__all__ = ["CHANNEL", "CacheListener", "application_name"]

log = logging.getLogger(__name__)

CHANNEL = "billing_gql_entitlements"
KEEPALIVE_SECONDS = 10.0
RETRY_SECONDS = 0.2
MAX_RETRY_SECONDS = 5.0
SYNC_SECONDS = 10.0


def application_name(pid: int | None = None) -> str:
    """The listener's ``application_name`` (with the process id, so an operator — or a test —
    can find one process's listener in ``pg_stat_activity``)."""
    return f"billing-gql-entitlements {os.getpid() if pid is None else pid}"


class CacheListener:
    """Keeps ``cache`` coherent while connected; see the module docstring."""

    def __init__(self, url: str, cache: EntitlementCache) -> None:
        self.url = url
        self.cache = cache
        self.backend_pid: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        self._closed = False
        self.synced = 0
        """The highest ``sync:<n>`` marker received (see :meth:`sync`)."""
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._next_marker = 0

    async def sync(self, conn: Any) -> None:
        """Return once this listener has processed every notification committed before now:
        send a ``sync:<n>`` marker through ``conn`` (any connection or pool) and wait for it
        to arrive (a listener receives notifications in commit order). Tests use it; a
        caller could use it for read-your-writes across connections."""
        self._next_marker += 1
        marker = self._next_marker + (os.getpid() << 32)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[marker] = waiter
        try:
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"sync:{marker}")
            await asyncio.wait_for(waiter, timeout=SYNC_SECONDS)
        finally:
            self._waiters.pop(marker, None)

    async def start(self, wait_seconds: float = 5.0) -> None:
        """Start listening; wait (at most ``wait_seconds``) for the first connection attempt."""
        self._task = asyncio.create_task(self._run(), name="entitlement-cache-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), timeout=wait_seconds)

    async def close(self) -> None:
        self._closed = True
        self.cache.disconnected()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = RETRY_SECONDS
        while not self._closed:
            try:
                if await self._listen():
                    delay = RETRY_SECONDS  # it was up: the next attempt is quick again
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("entitlement cache listener: %s", type(exc).__name__)
            finally:
                self.cache.disconnected()
                self.backend_pid = None
                self._first.set()
            if self._closed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _listen(self) -> bool:
        """One connection's life; returns once it is lost (True if it had gone live)."""
        conn = await asyncpg.connect(
            self.url, server_settings={"application_name": application_name()}
        )
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: self._lost(lost))
            await conn.add_listener(CHANNEL, self._on_notify)
            self.backend_pid = conn.get_server_pid()
            self.cache.connected()  # LISTEN is active: everything committed from here notifies
            self._first.set()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), timeout=KEEPALIVE_SECONDS)
                if not lost.is_set():
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=KEEPALIVE_SECONDS)
            log.warning("entitlement cache listener lost its connection; bypassing the cache")
            return True
        finally:
            self.cache.disconnected()
            with contextlib.suppress(Exception):
                conn.terminate()

    def _lost(self, lost: asyncio.Event) -> None:
        self.cache.disconnected()  # at once: not when the task next runs
        lost.set()

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload.startswith("sync:"):  # a marker: changes nothing
            with contextlib.suppress(ValueError):
                marker = int(payload[5:])
                self.synced = max(self.synced, marker)
                waiter = self._waiters.get(marker)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            return
        if payload == "all":
            self.cache.clear()
            return
        try:
            customer = UUID(payload)
        except ValueError:
            self.cache.clear()  # not ours to read: drop everything rather than guess
            return
        self.cache.invalidate(customer)
