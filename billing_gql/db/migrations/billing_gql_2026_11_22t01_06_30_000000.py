"""Index of the usage outbox's due rows (raw SQL runs before a migration's table operations,
so it lives after the migration creating the table)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-11-22T01:06:30:000000"
VERSION = "1.38.0"
DESCRIPTION = "usage outbox due index"

STATEMENTS = [
    # forward_usage: a provider's pending rows in due order.
    "CREATE INDEX usage_outbox_due_idx ON usage_outbox (provider, next_attempt_at, id)"
    " WHERE status = 'pending'",
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="billing_gql", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        assert engine is not None
        for statement in STATEMENTS:
            await engine.run_ddl(statement)

    manager.add_raw(run)
    return manager
