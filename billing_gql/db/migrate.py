"""Apply pending migrations: ours (Piccolo), then the extra schema steps the caller injects (the
composition root passes the job queue's, see :func:`billing_gql.runtime.migrate_database`).

Piccolo's migration machinery (and our Piccolo configuration) is imported only when a migration
is pending: the ids of the committed migrations are read from their files' ``ID = "…"`` lines
and compared with the ``migration`` table first, so a start on a current database (the usual
case) skips ~0.4 s of imports (``bench/cold_start.py``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg

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


_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_ID_LINE = re.compile(r'^ID = "([^"]+)"$', re.MULTILINE)


def committed_ids() -> set[str]:
    """The ids of the migration files shipped in ``db/migrations`` (without importing them)."""
    found: set[str] = set()
    for path in _MIGRATIONS.glob("billing_gql_*.py"):
        match = _ID_LINE.search(path.read_text("utf-8"))
        if match is None:
            raise RuntimeError(f'{path.name} has no ID = "..." line')
        found.add(match.group(1))
    return found


async def migrate(url: str, *, extra_steps: Sequence[SchemaStep] = ()) -> list[str]:
    """Apply every pending migration to ``url``, then ``extra_steps``; return the ids applied
    (empty: up to date)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        before = await _applied(conn)
        applied: list[str] = []
        if committed_ids() - before:
            await _run_piccolo(url)
            applied = sorted((await _applied(conn)) - before)
        for step in extra_steps:
            applied.extend(await step(url))
        return applied
    finally:
        with contextlib.suppress(Exception):
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        await conn.close()


async def _run_piccolo(url: str) -> None:
    """Piccolo's ``migrations forwards`` for our app (imported here: only when one is pending)."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from billing_gql.db import piccolo_conf

    os.environ.setdefault("PICCOLO_CONF", "billing_gql.db.piccolo_conf")
    piccolo_conf.DB.config = {"dsn": url}
    output = io.StringIO()
    # Piccolo reports progress with print(); keep our stdout to the lines we promise.
    with contextlib.redirect_stdout(output):
        result = await run_forwards(app_name="billing_gql")
    log.debug("piccolo: %s", output.getvalue())
    if not result.success:
        raise RuntimeError(f"migration failed: {result.message}\n{output.getvalue()}")
