"""Apply pending migrations: ours (Piccolo), then the extra schema steps the caller injects (the
composition root passes the job queue's, see :func:`billing_gql.runtime.migrate_database`)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from billing_gql.db import piccolo_conf

log = logging.getLogger(__name__)

# Serializes migrations across processes that start at once on one database.
_LOCK_KEY = 0x6269_6C6C  # "bill"


SchemaStep = Callable[[str], Awaitable[list[str]]]
"""An extra schema step run after ours under the same lock; returns what it applied."""


async def _applied(conn: asyncpg.Connection) -> set[str]:
    exists = await conn.fetchval("SELECT to_regclass('public.migration') IS NOT NULL")
    if not exists:
        return set()
    rows = await conn.fetch("SELECT name FROM migration WHERE app_name = 'billing_gql'")
    return {row["name"] for row in rows}


async def migrate(url: str, *, extra_steps: Sequence[SchemaStep] = ()) -> list[str]:
    """Apply every pending migration to ``url``, then ``extra_steps``; return the ids applied
    (empty: up to date)."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    os.environ.setdefault("PICCOLO_CONF", "billing_gql.db.piccolo_conf")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        before = await _applied(conn)
        piccolo_conf.DB.config = {"dsn": url}
        output = io.StringIO()
        # Piccolo reports progress with print(); keep our stdout to the lines we promise.
        with contextlib.redirect_stdout(output):
            result = await run_forwards(app_name="billing_gql")
        log.debug("piccolo: %s", output.getvalue())
        if not result.success:
            raise RuntimeError(f"migration failed: {result.message}\n{output.getvalue()}")
        applied = sorted((await _applied(conn)) - before)
        for step in extra_steps:
            applied.extend(await step(url))
        return applied
    finally:
        with contextlib.suppress(Exception):
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        await conn.close()
