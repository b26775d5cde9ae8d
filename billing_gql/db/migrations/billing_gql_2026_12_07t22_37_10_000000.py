"""The ``refunds`` table: one row per refund of a payment, made through ``refundPayment`` or
reported by the provider. A pending row reserves its amount (the sum of pending and succeeded
refunds never exceeds the payment, checked under the payment's row lock); ``idempotency_key``
and ``(provider, provider_refund_id)`` are unique, so a retry never records a refund twice.
``payments.refunded_minor`` can no longer exceed the payment."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-12-07T22:37:10:000000"
VERSION = "1.38.0"
DESCRIPTION = "refunds"

STATEMENTS = [
    "CREATE TABLE refunds ("
    " id UUID PRIMARY KEY DEFAULT gen_random_uuid(),"
    " payment_id UUID NOT NULL REFERENCES payments (id) ON DELETE RESTRICT,"
    " provider VARCHAR(50) NOT NULL,"
    " amount_minor BIGINT NOT NULL,"
    " currency VARCHAR(3) NOT NULL,"
    " reason VARCHAR(500) NULL,"
    " status VARCHAR(20) NOT NULL,"
    " origin VARCHAR(20) NOT NULL,"
    " provider_refund_id VARCHAR(255) NULL,"
    " reference VARCHAR(255) NULL,"
    " idempotency_key VARCHAR(255) NULL,"
    " revoke_access BOOLEAN NOT NULL DEFAULT false,"
    " failure_reason VARCHAR(1000) NULL,"
    " credit_note_id UUID NULL,"
    " created_at TIMESTAMPTZ NOT NULL,"
    " updated_at TIMESTAMPTZ NOT NULL,"
    " seq BIGSERIAL NOT NULL,"
    " CONSTRAINT refunds_amount_check CHECK (amount_minor > 0),"
    " CONSTRAINT refunds_status_check CHECK (status IN ('pending', 'succeeded', 'failed')),"
    " CONSTRAINT refunds_origin_check CHECK (origin IN ('api', 'provider')),"
    " CONSTRAINT refunds_idempotency_key_key UNIQUE (idempotency_key),"
    " CONSTRAINT refunds_provider_refund_key UNIQUE (provider, provider_refund_id))",
    "CREATE INDEX refunds_payment_id_idx ON refunds (payment_id, seq)",
    "ALTER TABLE payments ADD CONSTRAINT payments_refunded_check"
    " CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor)",
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
