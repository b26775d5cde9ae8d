"""A throwaway database for a test run, on ``DATABASE_URL``'s server or an embedded one."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from billing_gql.runtime import migrate_database

_RESET_ATTEMPTS = 5
"""TRUNCATE tries before a deadlock with a running server's worker is reported."""


class TestDatabase:
    """Creates ``billing_gql_test_<random>`` and drops it at the end."""

    __test__ = False  # not a pytest test class

    def __init__(self, server_url: str | None = None) -> None:
        self.server_url = server_url if server_url is not None else os.environ.get("DATABASE_URL")
        self.name = f"billing_gql_test_{uuid.uuid4().hex[:12]}"
        self.url = ""
        self._embedded: object | None = None
        self._tmp: Path | None = None
        self._admin_url = ""

    def start(self) -> str:
        """Create and migrate the database; return its URL."""
        if self.server_url:
            self._admin_url = self.server_url
        else:
            from billing_gql.db.embedded import EmbeddedPostgres

            self._tmp = Path(tempfile.mkdtemp(prefix="bgql-test-"))
            embedded = EmbeddedPostgres(self._tmp)
            self._embedded = embedded
            self._admin_url = embedded.start()
        parts = urlsplit(self._admin_url)
        self.url = parts._replace(path=f"/{self.name}").geturl()
        asyncio.run(self._create())
        return self.url

    async def _admin_connect(self) -> asyncpg.Connection:
        parts = urlsplit(self._admin_url)
        return await asyncpg.connect(parts._replace(path="/postgres").geturl())

    async def _create(self) -> None:
        conn = await self._admin_connect()
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        await migrate_database(self.url)

    async def _drop(self) -> None:
        conn = await self._admin_connect()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()

    def stop(self) -> None:
        """Drop the database (and stop the embedded server this run started)."""
        if self.url:
            asyncio.run(self._drop())
        if self._embedded is not None:
            self._embedded.stop()  # type: ignore[attr-defined]
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    async def reset(self) -> None:
        """Empty every table but the migration records.

        A server process a test module keeps running (its worker sweeping) may hold row locks
        on the tables the TRUNCATE locks one by one; when PostgreSQL settles such a deadlock by
        cancelling the TRUNCATE, the reset is tried again (the worker's short transaction has
        ended by then)."""
        conn = await asyncpg.connect(self.url)
        try:
            tables = await conn.fetch(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS name "
                "FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
                "AND tablename <> 'migration'"
            )
            if not tables:
                return
            names = ", ".join(r["name"] for r in tables)
            for attempt in range(_RESET_ATTEMPTS):
                try:
                    await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
                    return
                except asyncpg.DeadlockDetectedError:
                    if attempt == _RESET_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.1 * (attempt + 1))
        finally:
            await conn.close()
