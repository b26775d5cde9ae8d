"""Change notifications across server processes: PostgreSQL LISTEN/NOTIFY.

A trigger on ``checkouts`` sends ``pg_notify('billing_gql_checkout', id)`` for every insert or
update (delivered when the writing transaction commits, whichever process wrote it). Each
process keeps **one** listening connection, opened on first use, and wakes the GraphQL
subscriptions watching that id; they re-read the row and send it if it changed. A notification
carries only the id, so a woken subscriber always reads committed state, and coalesced wake-ups
never lose the latest state.

The same connection listens on ``billing_gql_session`` (:data:`SESSION_CHANNEL`): revoking a
customer's sessions notifies the customer's id, and every process re-checks the session of
each WebSocket that customer has open (closing those whose session is gone).

If the listening connection drops, notifications in the gap are lost: every subscriber is woken
to re-read, and the next wait reconnects. Subscribers also re-read every
:data:`RECHECK_SECONDS` as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext

log = logging.getLogger(__name__)

CHECKOUT_CHANNEL = "billing_gql_checkout"
SESSION_CHANNEL = "billing_gql_session"
CHANNELS = (CHECKOUT_CHANNEL, SESSION_CHANNEL)
RECHECK_SECONDS = 30.0
_EXTRAS_KEY = "events.listener"


class Watch:
    """One subscriber's wake-up flag."""

    def __init__(self, listener: ChangeListener) -> None:
        self._listener = listener
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Return when the watched row may have changed (or the safety re-check is due)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout=RECHECK_SECONDS)
        self._event.clear()
        await self._listener.ensure_connected()


class ChangeListener:
    """The process's LISTEN connection and the watches keyed by channel and row id."""

    def __init__(self, url: str, channels: tuple[str, ...] = CHANNELS) -> None:
        self.url = url
        self.channels = channels
        self._conn: asyncpg.Connection | None = None
        self._watches: dict[tuple[str, str], set[Watch]] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    async def ensure_connected(self) -> None:
        """Open (or reopen) the listening connection; after a reopen, wake everyone."""
        if self._conn is not None and not self._conn.is_closed():
            return
        async with self._lock:
            if self._closed or (self._conn is not None and not self._conn.is_closed()):
                return
            reopened = self._conn is not None
            conn = await asyncpg.connect(
                self.url, server_settings={"application_name": "billing-gql-listener"}
            )
            for channel in self.channels:
                await conn.add_listener(channel, self._on_notify)
            conn.add_termination_listener(self._on_lost)
            self._conn = conn
            if reopened:
                log.info("listening on %s again", ", ".join(self.channels))
                self._wake_all()

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        for watch in self._watches.get((channel, payload), ()):
            watch.wake()

    def _on_lost(self, conn: Any) -> None:
        if not self._closed:
            log.warning("the %s listening connection was lost", ", ".join(self.channels))
            self._wake_all()

    def _wake_all(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.wake()

    @asynccontextmanager
    async def watch(self, key: str, channel: str = CHECKOUT_CHANNEL) -> AsyncIterator[Watch]:
        """Watch row ``key`` (notified on ``channel``); LISTEN is active before this yields, so
        no change after the caller's next read is missed."""
        await self.ensure_connected()
        watch = Watch(self)
        watched = (channel, key)
        self._watches.setdefault(watched, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(watched)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[watched]

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)


def checkout_listener(runtime: ServiceContext) -> ChangeListener:
    """The process's listener, checkouts and sessions (created on first use, closed by
    :func:`close`)."""
    listener = runtime.extras.get(_EXTRAS_KEY)
    if listener is None:
        listener = ChangeListener(runtime.db.url)
        runtime.extras[_EXTRAS_KEY] = listener
    assert isinstance(listener, ChangeListener)
    return listener


async def close(runtime: ServiceContext) -> None:
    """Close the process's listener, if one was opened."""
    listener = runtime.extras.pop(_EXTRAS_KEY, None)
    if isinstance(listener, ChangeListener):
        await listener.close()
