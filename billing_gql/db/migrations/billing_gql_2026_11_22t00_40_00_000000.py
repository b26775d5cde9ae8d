"""Indexes for the hot paths and constraints Piccolo's column API cannot express."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-11-22T00:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "indexes and partial constraints"

STATEMENTS = [
    # Entitlement checks and subscription lists: a customer's live subscriptions.
    "CREATE INDEX subscriptions_customer_idx ON subscriptions (customer_id, created_at DESC)",
    "CREATE INDEX subscriptions_due_idx ON subscriptions (status, current_period_end)",
    "CREATE INDEX checkouts_customer_idx ON checkouts (customer_id, created_at DESC)",
    "CREATE INDEX checkouts_open_expiry_idx ON checkouts (expires_at) WHERE status = 'OPEN'",
    "CREATE INDEX checkouts_subscription_idx ON checkouts (subscription_id)",
    "CREATE INDEX payments_customer_idx ON payments (customer_id, received_at DESC)",
    "CREATE INDEX payments_checkout_idx ON payments (checkout_id)",
    "CREATE INDEX payments_unmatched_idx ON payments (provider, received_at DESC)"
    " WHERE status = 'unmatched'",
    "CREATE INDEX customer_sessions_customer_idx ON customer_sessions (customer_id)",
    "CREATE INDEX usage_events_customer_meter_ts_idx ON usage_events (customer_id, meter_id, ts)",
    "CREATE INDEX usage_charges_plan_idx ON usage_charges (plan_id, position)",
    "CREATE INDEX plan_features_feature_idx ON plan_features (feature)",
    "CREATE INDEX webhook_deliveries_retry_idx ON webhook_deliveries (next_attempt_at)"
    " WHERE status IN ('received', 'failed')",
    "CREATE INDEX webhook_deliveries_received_idx ON webhook_deliveries (received_at DESC)",
    "ALTER TABLE checkouts ADD CONSTRAINT checkouts_amounts_check"
    " CHECK (amount_minor >= 0 AND amount_paid_minor >= 0)",
    "ALTER TABLE clock_state ADD CONSTRAINT clock_state_single_row CHECK (id = 1)",
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
