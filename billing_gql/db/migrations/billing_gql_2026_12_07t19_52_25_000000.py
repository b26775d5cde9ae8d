"""One live subscription per (customer, plan) and one trial per (customer, plan), for the data
that exists (raw SQL runs before a migration's table operations, so it lives in its own
migration after the one adding the columns and tables):

- checkouts of new purchases keep the trial they were created with (``trial_days`` from their
  plan), so an open one completes as it would have;
- every trial a subscription had counts as redeemed (the oldest one per customer and plan);
- live duplicates that exist already (several TRIALING/ACTIVE/PAST_DUE/PAUSED subscriptions of
  one customer to one plan) are kept as they are — nobody loses what was paid for — but all
  but the oldest are marked ``legacy_duplicate`` and left out of the new unique index, for an
  admin to cancel; the migration never fails on them.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-12-07T19:52:25:000000"
VERSION = "1.38.0"
DESCRIPTION = "backfill trials; unique live subscription per customer and plan"

_LIVE = "('TRIALING', 'ACTIVE', 'PAST_DUE', 'PAUSED')"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="billing_gql", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            "UPDATE checkouts c SET trial_days = p.trial_days FROM plans p "
            "WHERE p.id = c.plan_id AND c.purpose = 'new' AND p.interval <> 'ONE_TIME' "
            "AND p.trial_days > 0"
        )
        await engine.run_ddl(
            "INSERT INTO trial_redemptions (customer_id, plan_id, subscription_id, created_at) "
            "SELECT DISTINCT ON (customer_id, plan_id) customer_id, plan_id, id, created_at "
            "FROM subscriptions WHERE trial_end IS NOT NULL "
            "ORDER BY customer_id, plan_id, created_at, id "
            "ON CONFLICT (customer_id, plan_id) DO NOTHING"
        )
        await engine.run_ddl(
            "UPDATE subscriptions SET legacy_duplicate = true WHERE id IN (SELECT id FROM "
            "(SELECT id, row_number() OVER (PARTITION BY customer_id, plan_id "
            "ORDER BY created_at, id) AS n FROM subscriptions "
            f"WHERE status IN {_LIVE}) ranked WHERE n > 1)"
        )
        await engine.run_ddl(
            "CREATE UNIQUE INDEX subscriptions_live_plan_key ON subscriptions "
            f"(customer_id, plan_id) WHERE status IN {_LIVE} AND NOT legacy_duplicate"
        )

    manager.add_raw(run)
    return manager
