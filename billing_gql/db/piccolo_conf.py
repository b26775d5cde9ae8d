"""Piccolo configuration, used by ``piccolo migrations …`` during development and by ``migrate``.

The engine is built without connecting (Piccolo's default engine connects at construction to
check the server version); :func:`billing_gql.db.migrate.migrate` points it at the real
database before running migrations.
"""

from __future__ import annotations

import os

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine


class LazyPostgresEngine(PostgresEngine):
    """A PostgresEngine that does not connect when constructed."""

    async def check_version(self) -> None:
        return None


# Developers generating migrations may point DATABASE_URL anywhere; nothing connects on import.
DB = LazyPostgresEngine(config={"dsn": os.environ.get("DATABASE_URL", "postgresql://localhost/")})

APP_REGISTRY = AppRegistry(apps=["billing_gql.table_registry"])
