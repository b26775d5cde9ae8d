"""Backfill ``invoice_items.carried_by`` with the checkout holding each item (raw SQL runs
before a migration's table operations, so it lives in its own migration after the one adding
the column)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-11-22T01:51:06:000000"
VERSION = "1.38.0"
DESCRIPTION = "backfill invoice_items.carried_by"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="billing_gql", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            "UPDATE invoice_items SET carried_by = ARRAY[checkout_id] "
            "WHERE checkout_id IS NOT NULL AND carried_by = '{}'"
        )

    manager.add_raw(run)
    return manager
