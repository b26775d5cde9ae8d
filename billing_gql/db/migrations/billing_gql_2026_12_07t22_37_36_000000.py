"""Invoices (issue 14): our own numbered invoices and credit notes, mirrored provider invoices,
their lines, the gapless number counters, and what usage each closed push period billed."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-12-07T22:37:36:000000"
VERSION = "1.38.0"
DESCRIPTION = "invoices, invoice_lines, invoice_number_counters, usage_period_closes, usage_billed"

STATEMENTS = [
    "CREATE TABLE invoice_number_counters (prefix varchar(12) NOT NULL, year integer NOT NULL, "
    "last_number bigint NOT NULL, PRIMARY KEY (prefix, year))",
    "CREATE TABLE invoices ("
    " id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " number varchar(255),"
    " kind varchar(20) NOT NULL DEFAULT 'invoice',"
    " status varchar(20) NOT NULL DEFAULT 'DRAFT',"
    " customer_id uuid REFERENCES customers (id) ON DELETE RESTRICT,"
    " subscription_id uuid REFERENCES subscriptions (id) ON DELETE SET NULL,"
    " checkout_id uuid REFERENCES checkouts (id) ON DELETE SET NULL,"
    " payment_id uuid REFERENCES payments (id) ON DELETE SET NULL,"
    " credit_of uuid REFERENCES invoices (id) ON DELETE SET NULL,"
    " refunded_to_minor bigint,"
    " currency varchar(3) NOT NULL,"
    " period_start timestamptz, period_end timestamptz,"
    " issued_at timestamptz, due_at timestamptz, paid_at timestamptz, voided_at timestamptz,"
    " subtotal_minor bigint NOT NULL DEFAULT 0, discount_minor bigint NOT NULL DEFAULT 0,"
    " tax_minor bigint NOT NULL DEFAULT 0, total_minor bigint NOT NULL DEFAULT 0,"
    " amount_paid_minor bigint NOT NULL DEFAULT 0, amount_due_minor bigint NOT NULL DEFAULT 0,"
    " provider varchar(50) NOT NULL,"
    " provider_invoice_id varchar(255),"
    " hosted_url text, provider_pdf_url text,"
    " paid_provider varchar(50), paid_reference varchar(255),"
    " provider_updated_at timestamptz,"
    " created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,"
    " CONSTRAINT invoices_status_check CHECK "
    "(status IN ('DRAFT', 'OPEN', 'PAID', 'VOID', 'UNCOLLECTIBLE')),"
    " CONSTRAINT invoices_kind_check CHECK (kind IN ('invoice', 'credit_note')),"
    # Our own invoices are numbered when finalized; a draft has none.
    " CONSTRAINT invoices_number_check CHECK "
    "(provider_invoice_id IS NOT NULL OR (number IS NULL) = (status = 'DRAFT')),"
    " CONSTRAINT invoices_provider_ref_key UNIQUE (provider, provider_invoice_id))",
    # Numbers of our own invoices are never given twice.
    "CREATE UNIQUE INDEX invoices_number_key ON invoices (number) "
    "WHERE provider_invoice_id IS NULL AND number IS NOT NULL",
    # One live invoice per checkout (a voided one is replaced by a new one).
    "CREATE UNIQUE INDEX invoices_checkout_live_key ON invoices (checkout_id) "
    "WHERE checkout_id IS NOT NULL AND status <> 'VOID' AND kind = 'invoice'",
    # One credit note per refunded increment of a payment.
    "CREATE UNIQUE INDEX invoices_credit_note_key ON invoices (payment_id, refunded_to_minor) "
    "WHERE kind = 'credit_note'",
    "CREATE INDEX invoices_customer_idx ON invoices (customer_id, created_at DESC, id DESC)",
    "CREATE INDEX invoices_subscription_idx ON invoices (subscription_id, created_at DESC)",
    "CREATE INDEX invoices_open_checkout_idx ON invoices (checkout_id) WHERE status = 'OPEN'",
    "CREATE TABLE invoice_lines ("
    " id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " invoice_id uuid NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,"
    " position integer NOT NULL,"
    " description text NOT NULL,"
    " kind varchar(20) NOT NULL,"
    " quantity numeric NOT NULL DEFAULT 1,"
    " unit_amount_minor bigint,"
    " amount_minor bigint NOT NULL,"
    " period_start timestamptz, period_end timestamptz,"
    " CONSTRAINT invoice_lines_kind_check CHECK (kind IN "
    "('PLAN', 'USAGE', 'PRORATION', 'DISCOUNT', 'TAX', 'CREDIT', 'ONE_TIME')),"
    " CONSTRAINT invoice_lines_position_key UNIQUE (invoice_id, position))",
    # A push subscription's period whose usage was billed (once: the primary key).
    "CREATE TABLE usage_period_closes ("
    " subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,"
    " period_start timestamptz NOT NULL, period_end timestamptz NOT NULL,"
    " plan_id uuid NOT NULL, closed_at timestamptz NOT NULL,"
    " PRIMARY KEY (subscription_id, period_start))",
    # What each metered charge (by meter) of a closed period has been billed so far (late usage adds).
    "CREATE TABLE usage_billed ("
    " subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,"
    " period_start timestamptz NOT NULL,"
    " meter_id uuid NOT NULL,"
    " quantity numeric NOT NULL, amount_minor bigint NOT NULL, updated_at timestamptz NOT NULL,"
    " PRIMARY KEY (subscription_id, period_start, meter_id))",
    # The period a usage item bills (its invoice line shows it).
    "ALTER TABLE invoice_items ADD COLUMN period_start timestamptz, "
    "ADD COLUMN period_end timestamptz",
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
