"""Invoice tables (declarations only; every write is in :mod:`billing_gql.store.invoices_sql`):
our own numbered invoices and credit notes and the provider invoices we mirror, their lines,
the per-(prefix, year) number counters, and what usage each closed push period billed."""

from __future__ import annotations

from decimal import Decimal

from piccolo.columns import (
    UUID,
    BigInt,
    ForeignKey,
    Integer,
    Numeric,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.constraints import Check, Unique
from piccolo.table import Table

from billing_gql.store.checkout import Checkout
from billing_gql.store.customers import Customer
from billing_gql.store.payments import Payment
from billing_gql.store.subscriptions import Subscription


class InvoiceNumberCounter(Table, tablename="invoice_number_counters"):
    """The last number given per (prefix, year); incremented in the finalizing transaction."""

    prefix = Varchar(length=12, primary_key=True)
    year = Integer()
    last_number = BigInt()


class Invoice(Table, tablename="invoices"):
    """An invoice (or a credit note: ``kind = 'credit_note'``, negative total).

    Ours (``provider_invoice_id`` null) are numbered gaplessly when finalized; a provider's
    (Stripe invoices, Polar orders) are mirrored with its id, number, URLs and amounts.
    """

    id = UUID(primary_key=True)
    number = Varchar(length=255, null=True, default=None)
    kind = Varchar(length=20, default="invoice")
    status = Varchar(length=20, default="DRAFT")
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.restrict, null=True)
    subscription_id = ForeignKey(references=Subscription, on_delete=OnDelete.set_null, null=True)
    checkout_id = ForeignKey(references=Checkout, on_delete=OnDelete.set_null, null=True)
    # A credit note: the payment refunded, and the refunded total it brought it to.
    payment_id = ForeignKey(references=Payment, on_delete=OnDelete.set_null, null=True)
    credit_of = UUID(null=True, default=None)
    refunded_to_minor = BigInt(null=True, default=None)
    currency = Varchar(length=3)
    period_start = Timestamptz(null=True, default=None)
    period_end = Timestamptz(null=True, default=None)
    issued_at = Timestamptz(null=True, default=None)
    due_at = Timestamptz(null=True, default=None)
    paid_at = Timestamptz(null=True, default=None)
    voided_at = Timestamptz(null=True, default=None)
    subtotal_minor = BigInt(default=0)
    discount_minor = BigInt(default=0)
    tax_minor = BigInt(default=0)
    total_minor = BigInt(default=0)
    amount_paid_minor = BigInt(default=0)
    amount_due_minor = BigInt(default=0)
    provider = Varchar(length=50)
    provider_invoice_id = Varchar(length=255, null=True, default=None)
    hosted_url = Text(null=True, default=None)
    provider_pdf_url = Text(null=True, default=None)
    # A receipt: the provider and reference of the payment that paid it.
    paid_provider = Varchar(length=50, null=True, default=None)
    paid_reference = Varchar(length=255, null=True, default=None)
    provider_updated_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()

    invoices_status_check = Check("status IN ('DRAFT', 'OPEN', 'PAID', 'VOID', 'UNCOLLECTIBLE')")
    invoices_kind_check = Check("kind IN ('invoice', 'credit_note')")
    invoices_provider_ref_key = Unique(["provider", "provider_invoice_id"])


class InvoiceLine(Table, tablename="invoice_lines"):
    id = UUID(primary_key=True)
    invoice_id = ForeignKey(references=Invoice, on_delete=OnDelete.cascade, null=False)
    position = Integer()
    description = Text()
    kind = Varchar(length=20)
    quantity = Numeric(default=Decimal(1))
    unit_amount_minor = BigInt(null=True, default=None)
    amount_minor = BigInt()
    period_start = Timestamptz(null=True, default=None)
    period_end = Timestamptz(null=True, default=None)

    invoice_lines_kind_check = Check(
        "kind IN ('PLAN', 'USAGE', 'PRORATION', 'DISCOUNT', 'TAX', 'CREDIT', 'ONE_TIME')"
    )
    invoice_lines_position_key = Unique(["invoice_id", "position"])


class UsagePeriodClose(Table, tablename="usage_period_closes"):
    """A push subscription's period whose usage was billed (once per period)."""

    subscription_id = ForeignKey(
        references=Subscription, on_delete=OnDelete.cascade, primary_key=True
    )
    period_start = Timestamptz()
    period_end = Timestamptz()
    plan_id = UUID()
    closed_at = Timestamptz()


class UsageBilled(Table, tablename="usage_billed"):
    """What a metered charge of a closed period has been billed so far."""

    subscription_id = ForeignKey(
        references=Subscription, on_delete=OnDelete.cascade, primary_key=True
    )
    period_start = Timestamptz()
    meter_id = UUID()
    quantity = Numeric()
    amount_minor = BigInt()
    updated_at = Timestamptz()
