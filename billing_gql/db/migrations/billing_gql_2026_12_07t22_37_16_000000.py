"""Usage charges carry provider references (a Stripe metered price per charge), and payments
may be disputed: ``disputed`` while a chargeback is open, ``dispute_won`` / ``dispute_lost``
once it closed (a lost dispute counts as a full refund)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-12-07T22:37:16:000000"
VERSION = "1.38.0"
DESCRIPTION = "usage charge provider refs; disputed payments"

STATEMENTS = [
    "ALTER TABLE usage_charges ADD COLUMN provider_refs JSONB NOT NULL DEFAULT '[]'::jsonb",
    "ALTER TABLE payments DROP CONSTRAINT payments_status_check",
    "ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN ('succeeded',"
    " 'failed', 'refunded', 'partially_refunded', 'unmatched', 'flagged', 'disputed',"
    " 'dispute_won', 'dispute_lost'))",
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
