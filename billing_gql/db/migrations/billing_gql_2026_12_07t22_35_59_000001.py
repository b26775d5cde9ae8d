"""A checkout's provider session is claimed in its row (``session_claim``, a token, and
``session_claimed_at``, wall time) and committed before the provider is called, so no
transaction or pooled connection is held during the call; a claim older than its lease (the
claimant crashed) may be taken over by a retry."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-12-07T22:35:59:000001"
VERSION = "1.38.0"
DESCRIPTION = "checkouts.session_claim"

STATEMENTS = [
    "ALTER TABLE checkouts ADD COLUMN session_claim UUID NULL",
    "ALTER TABLE checkouts ADD COLUMN session_claimed_at TIMESTAMPTZ NULL",
    "ALTER TABLE customers ADD COLUMN deleted_at TIMESTAMPTZ NULL",
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
