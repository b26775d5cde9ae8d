"""Subscription table: one row per customer subscription, whichever provider manages it; and
each provider's reconciliation state."""

from __future__ import annotations

from decimal import Decimal

from piccolo.columns import (
    JSONB,
    UUID,
    Array,
    BigInt,
    Boolean,
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

from billing_gql.store.catalog import Plan
from billing_gql.store.customers import Customer


class Subscription(Table, tablename="subscriptions"):
    id = UUID(primary_key=True)
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.restrict, null=False)
    plan_id = ForeignKey(references=Plan, on_delete=OnDelete.restrict, null=False)
    provider = Varchar(length=50)
    provider_subscription_id = Varchar(length=255, null=True, default=None)
    status = Varchar(length=20)
    currency = Varchar(length=3)
    quantity = Integer(default=1)
    current_period_start = Timestamptz(null=True, default=None)
    current_period_end = Timestamptz(null=True, default=None)
    trial_end = Timestamptz(null=True, default=None)
    cancel_at_period_end = Boolean(default=False)
    canceled_at = Timestamptz(null=True, default=None)
    ended_at = Timestamptz(null=True, default=None)
    paused_at = Timestamptz(null=True, default=None)
    # The checkout that created it: unique, so concurrent completions make one subscription.
    origin_checkout_id = UUID(null=True, default=None, unique=True)
    # The provider's time of the newest state applied; older events never regress the row.
    provider_updated_at = Timestamptz(null=True, default=None)
    pending_plan_id = ForeignKey(references=Plan, on_delete=OnDelete.restrict, null=True)
    pending_plan_at = Timestamptz(null=True, default=None)
    # MONTH/YEAR periods keep this anchor's day of month (Jan 31 -> Feb 28 -> Mar 31).
    billing_anchor = Timestamptz(null=True, default=None)
    # One live subscription per (customer, plan): the partial unique index
    # ``subscriptions_live_plan_key`` (its migration). Duplicates that existed before it are
    # kept, marked here, and left out of the index (an admin cancels them).
    legacy_duplicate = Boolean(default=False)
    created_at = Timestamptz()
    updated_at = Timestamptz()

    subscriptions_status_check = Check(
        "status IN ('INCOMPLETE', 'TRIALING', 'ACTIVE', 'PAST_DUE', 'PAUSED', 'CANCELED', "
        "'EXPIRED')"
    )
    subscriptions_quantity_check = Check("quantity >= 1")
    subscriptions_provider_ref_key = Unique(["provider", "provider_subscription_id"])


class TrialRedemption(Table, tablename="trial_redemptions"):
    """A customer used a plan's trial: once per (customer, plan), ever (the unique key)."""

    id = UUID(primary_key=True)
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.cascade, null=False)
    plan_id = ForeignKey(references=Plan, on_delete=OnDelete.cascade, null=False)
    # The subscription that had the trial (null until created, or if it was deleted).
    subscription_id = UUID(null=True, default=None)
    created_at = Timestamptz()

    trial_redemptions_key = Unique(["customer_id", "plan_id"])


class InvoiceItem(Table, tablename="invoice_items"):
    """An amount owed (or credited) outside the plan's price: prorations, one-off adjustments.

    Pending items (``invoiced_at`` null) show in ``invoicePreview`` and are added to the next
    push renewal checkout; provider-managed subscriptions keep them for the record.
    """

    id = UUID(primary_key=True)
    subscription_id = ForeignKey(references=Subscription, on_delete=OnDelete.cascade, null=False)
    kind = Varchar(length=30, default="proration")
    description = Text()
    currency = Varchar(length=3)
    amount_minor = BigInt()
    quantity = Numeric(default=Decimal(1))
    invoiced_at = Timestamptz(null=True, default=None)
    # The push checkout (renewal or invoice) that bills this item; it is marked invoiced when
    # that checkout completes. A plain UUID: checkouts reference subscriptions already.
    checkout_id = UUID(null=True, default=None)
    # Every push checkout that ever carried it (an expired one releases its items to the next;
    # if money completes the expired one after all, the item is its and nobody else's).
    carried_by = Array(base_column=UUID(), default=list)
    # The period a usage item bills (null for other items).
    period_start = Timestamptz(null=True, default=None)
    period_end = Timestamptz(null=True, default=None)
    created_at = Timestamptz()


class ReconcileState(Table, tablename="reconcile_state"):
    """Per provider: where its next reconciliation resumes and when the worker runs it."""

    provider = Varchar(length=50, primary_key=True)
    # ``ReconcileResult.cursor`` of the last successful run, handed back to the next one.
    cursor = JSONB(null=True, default=None)
    last_run_at = Timestamptz(null=True, default=None)
    last_error = Text(null=True, default=None)
    # When the worker's reconcile sweep runs it next (claimed by moving it ahead).
    next_run_at = Timestamptz(null=True, default=None)
    updated_at = Timestamptz()
