"""payments.status may be ``flagged``: money kept for operators and never counted (a bank
reference seen again with another amount, or a transfer the provider's API did not confirm)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-12-07T20:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "payments.status flagged"

STATEMENTS = [
    "ALTER TABLE payments DROP CONSTRAINT payments_status_check",
    "ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN ('succeeded',"
    " 'failed', 'refunded', 'partially_refunded', 'unmatched', 'flagged'))",
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
