"""The per-process LISTEN connection: wake-ups by id, and recovery after losing the connection."""

from __future__ import annotations

import asyncio

import asyncpg

from billing_gql.events.notify import CHECKOUT_CHANNEL, RECHECK_SECONDS, ChangeListener
from billing_gql.testing.database import TestDatabase

# Generous, yet below the safety re-read after which Watch.wait returns anyway: a missing
# wake-up fails the test (instead of hanging it, or passing on the re-read).
WAIT = RECHECK_SECONDS / 3


async def test_a_notification_wakes_only_the_watchers_of_its_id(
    clean_database: TestDatabase,
) -> None:
    listener = ChangeListener(clean_database.url)
    other = await asyncpg.connect(clean_database.url)
    try:
        async with listener.watch("a") as a, listener.watch("b") as b:
            await other.execute("SELECT pg_notify($1, 'a')", CHECKOUT_CHANNEL)
            await asyncio.wait_for(a.wait(), WAIT)
            assert not b._event.is_set()
            # A notification inside a transaction arrives only when it commits.
            async with other.transaction():
                await other.execute("SELECT pg_notify($1, 'b')", CHECKOUT_CHANNEL)
                await asyncio.sleep(0.2)
                assert not b._event.is_set()
            await asyncio.wait_for(b.wait(), WAIT)
        assert listener._watches == {}
    finally:
        await other.close()
        await listener.close()


async def test_a_lost_connection_wakes_everyone_and_is_reopened(
    clean_database: TestDatabase,
) -> None:
    listener = ChangeListener(clean_database.url)
    admin = await asyncpg.connect(clean_database.url)
    try:
        async with listener.watch("x") as watch:
            assert listener._conn is not None
            pid = listener._conn.get_server_pid()
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            # Woken to re-read (changes in the gap are unknown); waiting reconnects.
            await asyncio.wait_for(watch.wait(), WAIT)
            assert listener._conn is not None and not listener._conn.is_closed()
            assert listener._conn.get_server_pid() != pid
            await admin.execute("SELECT pg_notify($1, 'x')", CHECKOUT_CHANNEL)
            await asyncio.wait_for(watch.wait(), WAIT)
    finally:
        await admin.close()
        await listener.close()
