"""Indexes of the billing engine: the entitlement hot path, bank-transfer matching, renewals.

Raw SQL runs before a migration's table operations, so these live after the migration that
creates the provider grant tables and the new columns.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-11-22T00:44:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "billing engine indexes"

STATEMENTS = [
    # entitlement(customer, feature): live subscriptions of one customer ...
    "CREATE INDEX subscriptions_live_customer_idx ON subscriptions (customer_id, plan_id)"
    " WHERE status IN ('TRIALING', 'ACTIVE', 'PAST_DUE')",
    # ... its completed purchases (ONE_TIME plans are filtered by a join on plans) ...
    "CREATE INDEX checkouts_completed_customer_idx ON checkouts (customer_id, plan_id)"
    " WHERE status = 'COMPLETED' AND purpose = 'new'",
    # ... and the features of its live provider grants.
    "CREATE INDEX provider_grant_features_customer_idx"
    " ON provider_grant_features (customer_id, feature)",
    "CREATE INDEX provider_grant_features_grant_idx ON provider_grant_features (grant_id)",
    "CREATE INDEX provider_grants_customer_idx ON provider_grants (customer_id)",
    # Bank transfers are matched by reference case-insensitively, so the reference is unique
    # that way too.
    "CREATE UNIQUE INDEX checkouts_reference_ci_key ON checkouts (provider, upper(payment_reference))"
    " WHERE payment_reference IS NOT NULL",
    # A subscription's open push checkout (Subscription.renewalCheckout) and its items.
    "CREATE INDEX checkouts_open_subscription_idx ON checkouts (subscription_id, created_at DESC)"
    " WHERE status = 'OPEN' AND purpose <> 'new'",
    # One live renewal checkout per subscription and period (the period end is the renewal
    # checkout's request fingerprint), and one open invoice checkout per subscription.
    "CREATE UNIQUE INDEX checkouts_renewal_key ON checkouts (subscription_id, request_fingerprint)"
    " WHERE purpose = 'renewal' AND status IN ('OPEN', 'COMPLETED')",
    "CREATE UNIQUE INDEX checkouts_open_invoice_key ON checkouts (subscription_id)"
    " WHERE purpose = 'invoice' AND status = 'OPEN'",
    "CREATE INDEX invoice_items_checkout_idx ON invoice_items (checkout_id)"
    " WHERE checkout_id IS NOT NULL",
    "CREATE INDEX payments_subscription_idx ON payments (subscription_id)",
    "CREATE INDEX payments_received_idx ON payments (received_at DESC, id DESC)",
    "CREATE INDEX subscriptions_created_idx ON subscriptions (created_at DESC, id DESC)",
    "CREATE INDEX webhook_deliveries_provider_idx"
    " ON webhook_deliveries (provider, received_at DESC)",
    "ALTER TABLE checkouts ADD CONSTRAINT checkouts_purpose_check"
    " CHECK (purpose IN ('new', 'renewal', 'invoice'))",
    "ALTER TABLE checkouts ADD CONSTRAINT checkouts_refunded_check CHECK (refunded_minor >= 0)",
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
