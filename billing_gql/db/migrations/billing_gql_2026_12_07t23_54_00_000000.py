"""Entitlement notifications on the partitioned ``usage_events``.

Migration ``2026-12-07T22:36:42`` put the entitlement cache's notification triggers on
``usage_events``; migration ``2026-12-07T22:40:00`` then renamed that table away, created the
partitioned ``usage_events`` under its name and dropped the old table — and the triggers with it.
They are made again here, on the partitioned parent, with the same function
(``billing_gql_entitlements_usage``: one notification per distinct customer of the statement's
rows). A statement-level trigger with a transition table on a partitioned table fires for
statements that name the parent (every writer: the ingest statement, an operator's repair), and
its transition table holds the rows of every partition they touched. Moving rows from the
default partition into a new month's (``usage/partitions.py``) names the partitions, fires
nothing, and changes no customer's usage; dropping a partition (retention) fires nothing either,
and only removes months whose periods are over. ``IF EXISTS``: a database whose
``usage_events`` kept the triggers (none should) ends the same.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-12-07T23:54:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "entitlement notifications on the partitioned usage_events"

STATEMENTS = [
    "DROP TRIGGER IF EXISTS usage_events_entitlements ON usage_events",
    "DROP TRIGGER IF EXISTS usage_events_entitlements_delete ON usage_events",
    "DROP TRIGGER IF EXISTS usage_events_entitlements_truncate ON usage_events",
    "CREATE TRIGGER usage_events_entitlements AFTER INSERT ON usage_events "
    "REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION billing_gql_entitlements_usage()",
    "CREATE TRIGGER usage_events_entitlements_delete AFTER DELETE ON usage_events "
    "REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION billing_gql_entitlements_usage()",
    "CREATE TRIGGER usage_events_entitlements_truncate AFTER TRUNCATE ON usage_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION billing_gql_entitlements_all()",
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
