"""Storage: the asyncpg pool, the embedded PostgreSQL, Piccolo tables and migrations."""

from billing_gql.db.database import Connection, Database, connect_database
from billing_gql.db.migrate import migrate

__all__ = ["Connection", "Database", "connect_database", "migrate"]
