"""Push renewals keyed by their period, ``checkouts.renews_from`` (backfilled from the old
fingerprint "renewal:<period end>"): at most one OPEN and at most one paid renewal per
subscription and period (raw SQL runs before a migration's table operations, so it lives in
its own migration after the one adding the columns)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-11-22T02:25:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "one open and one paid push renewal per subscription and period"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="billing_gql", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            "UPDATE checkouts SET renews_from = substr(request_fingerprint, 9)::timestamptz "
            "WHERE purpose = 'renewal' AND renews_from IS NULL "
            "AND request_fingerprint LIKE 'renewal:%'"
        )
        # The old key (two identical indexes, from two branches) counted a COMPLETED renewal
        # as its period's one live renewal: a paid renewal that bought nothing (its period
        # paid otherwise, or credited back after a plan change) blocked a fresh one. Now the
        # OPEN renewal and the paid one are keys of their own.
        await engine.run_ddl("DROP INDEX IF EXISTS checkouts_renewal_key")
        await engine.run_ddl("DROP INDEX IF EXISTS checkouts_renewal_period_key")
        await engine.run_ddl(
            "CREATE UNIQUE INDEX checkouts_renewal_open_key "
            "ON checkouts (subscription_id, renews_from) "
            "WHERE purpose = 'renewal' AND status = 'OPEN'"
        )
        await engine.run_ddl(
            "CREATE UNIQUE INDEX checkouts_renewal_paid_key "
            "ON checkouts (subscription_id, renews_from) WHERE paid_period_start IS NOT NULL"
        )

    manager.add_raw(run)
    return manager
