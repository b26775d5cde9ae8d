"""Checkout change notifications (LISTEN/NOTIFY fan-out to GraphQL subscriptions), one push
renewal per subscription and period, and the index of pending outgoing webhook messages (raw
SQL runs before a migration's table operations, so it lives in its own migration after the
ones creating the tables)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-11-22T00:47:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "checkout notify trigger, one renewal per period, pending webhook messages index"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="billing_gql", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        assert engine is not None
        # NOTIFY is delivered at commit, once per distinct payload per transaction: every
        # listening server process learns which checkout changed and re-reads it.
        await engine.run_ddl(
            "CREATE FUNCTION billing_gql_notify_checkout() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM pg_notify('billing_gql_checkout', NEW.id::text); RETURN NULL; END $$"
        )
        await engine.run_ddl(
            "CREATE TRIGGER checkouts_notify AFTER INSERT OR UPDATE ON checkouts "
            "FOR EACH ROW EXECUTE FUNCTION billing_gql_notify_checkout()"
        )
        # At most one live (open or paid) push renewal checkout per subscription and period:
        # concurrent workers can never issue two (the engine's fingerprint names the period).
        await engine.run_ddl(
            "CREATE UNIQUE INDEX checkouts_renewal_period_key "
            "ON checkouts (subscription_id, request_fingerprint) "
            "WHERE purpose = 'renewal' AND status IN ('OPEN', 'COMPLETED')"
        )
        await engine.run_ddl(
            "CREATE INDEX webhook_messages_due_idx ON webhook_messages (next_attempt_at) "
            "WHERE status = 'pending'"
        )

    manager.add_raw(run)
    return manager
