"""Index of pending invoice items (raw SQL runs before a migration's table operations, so it
lives in its own migration after the one creating the table)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-11-22T00:41:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "pending invoice items index"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="billing_gql", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            "CREATE INDEX invoice_items_pending_idx ON invoice_items (subscription_id) "
            "WHERE invoiced_at IS NULL"
        )

    manager.add_raw(run)
    return manager
