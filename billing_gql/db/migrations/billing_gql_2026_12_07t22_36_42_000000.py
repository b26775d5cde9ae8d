"""Entitlement change notifications: every change that can alter a customer's entitlements
sends ``pg_notify('billing_gql_entitlements', <customer id> | 'all')`` from a trigger, in the
writing transaction (so it is delivered at commit, and only if the change commits). Each server
process's entitlement cache (``billing_gql/entitlements/cache.py``) listens and drops what a
notification names.

Triggers rather than ``pg_notify`` in the writers: they catch every writer — the store modules,
the applier, the worker's sweeps, migrations, an operator's ``psql`` — and a writer added later
cannot forget them. Per customer: ``subscriptions``, ``checkouts`` (ONE_TIME purchases),
``provider_grant_features``, ``customers`` (one created, deleted, or its external id changing) and
``usage_events`` (a metered feature's ``used``; one statement-level trigger per insert batch,
one notification per distinct customer). ``all``: ``plans``, ``plan_features``, ``meters`` (a
feature becoming metered) and ``clock_state`` (the test clock). ``TRUNCATE`` of any of them
notifies ``all``. PostgreSQL folds identical notifications of one transaction into one.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-12-07T22:36:42:000000"
VERSION = "1.38.0"
DESCRIPTION = "entitlement change notifications"

_CHANNEL = "'billing_gql_entitlements'"

STATEMENTS = [
    # A row's customer, old and new (a row moving between customers changes both).
    "CREATE FUNCTION billing_gql_entitlements_row() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "IF TG_OP <> 'INSERT' THEN "
    f"PERFORM pg_notify({_CHANNEL}, OLD.customer_id::text); END IF; "
    "IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.customer_id <> OLD.customer_id) THEN "
    f"PERFORM pg_notify({_CHANNEL}, NEW.customer_id::text); END IF; "
    "RETURN NULL; END $$",
    # customers: the id is the row's own.
    "CREATE FUNCTION billing_gql_entitlements_customer() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN PERFORM pg_notify({_CHANNEL}, "
    "(CASE TG_OP WHEN 'INSERT' THEN NEW.id ELSE OLD.id END)::text); RETURN NULL; END $$",
    # Catalog and clock changes reach every customer.
    "CREATE FUNCTION billing_gql_entitlements_all() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN PERFORM pg_notify({_CHANNEL}, 'all'); RETURN NULL; END $$",
    # A usage batch: one notification per distinct customer of the statement's new rows.
    "CREATE FUNCTION billing_gql_entitlements_usage() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN PERFORM pg_notify({_CHANNEL}, c::text) "
    "FROM (SELECT DISTINCT customer_id AS c FROM changed_rows) d WHERE c IS NOT NULL; "
    "RETURN NULL; END $$",
    # Subscriptions: only the columns the entitlement check reads.
    "CREATE TRIGGER subscriptions_entitlements AFTER INSERT OR DELETE ON subscriptions "
    "FOR EACH ROW EXECUTE FUNCTION billing_gql_entitlements_row()",
    "CREATE TRIGGER subscriptions_entitlements_update AFTER UPDATE OF customer_id, plan_id, "
    "status, current_period_start, current_period_end ON subscriptions FOR EACH ROW "
    "WHEN (OLD.customer_id IS DISTINCT FROM NEW.customer_id "
    "OR OLD.plan_id IS DISTINCT FROM NEW.plan_id OR OLD.status IS DISTINCT FROM NEW.status "
    "OR OLD.current_period_start IS DISTINCT FROM NEW.current_period_start "
    "OR OLD.current_period_end IS DISTINCT FROM NEW.current_period_end) "
    "EXECUTE FUNCTION billing_gql_entitlements_row()",
    # Checkouts: a ONE_TIME purchase grants while completed and not fully refunded.
    "CREATE TRIGGER checkouts_entitlements AFTER INSERT OR DELETE ON checkouts "
    "FOR EACH ROW EXECUTE FUNCTION billing_gql_entitlements_row()",
    "CREATE TRIGGER checkouts_entitlements_update AFTER UPDATE OF customer_id, plan_id, status, "
    "purpose, refunded_minor, amount_paid_minor ON checkouts FOR EACH ROW "
    "WHEN (OLD.customer_id IS DISTINCT FROM NEW.customer_id "
    "OR OLD.plan_id IS DISTINCT FROM NEW.plan_id OR OLD.status IS DISTINCT FROM NEW.status "
    "OR OLD.purpose IS DISTINCT FROM NEW.purpose "
    "OR OLD.refunded_minor IS DISTINCT FROM NEW.refunded_minor "
    "OR OLD.amount_paid_minor IS DISTINCT FROM NEW.amount_paid_minor) "
    "EXECUTE FUNCTION billing_gql_entitlements_row()",
    "CREATE TRIGGER provider_grant_features_entitlements AFTER INSERT OR UPDATE OR DELETE "
    "ON provider_grant_features FOR EACH ROW EXECUTE FUNCTION billing_gql_entitlements_row()",
    "CREATE TRIGGER customers_entitlements AFTER INSERT OR DELETE ON customers "
    "FOR EACH ROW EXECUTE FUNCTION billing_gql_entitlements_customer()",
    "CREATE TRIGGER customers_entitlements_update AFTER UPDATE OF external_id ON customers "
    "FOR EACH ROW WHEN (OLD.external_id IS DISTINCT FROM NEW.external_id) "
    "EXECUTE FUNCTION billing_gql_entitlements_customer()",
    "CREATE TRIGGER usage_events_entitlements AFTER INSERT ON usage_events "
    "REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION billing_gql_entitlements_usage()",
    "CREATE TRIGGER usage_events_entitlements_delete AFTER DELETE ON usage_events "
    "REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION billing_gql_entitlements_usage()",
    *(
        f"CREATE TRIGGER {table}_entitlements_all AFTER INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION billing_gql_entitlements_all()"
        for table in ("plans", "plan_features", "meters", "clock_state")
    ),
    *(
        f"CREATE TRIGGER {table}_entitlements_truncate AFTER TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION billing_gql_entitlements_all()"
        for table in (
            "subscriptions",
            "checkouts",
            "provider_grant_features",
            "customers",
            "usage_events",
            "plans",
            "plan_features",
            "meters",
            "clock_state",
        )
    ),
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
