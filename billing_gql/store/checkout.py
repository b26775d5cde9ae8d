"""Checkout table: an attempt to buy a plan (or pay a renewal) through one provider."""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    Array,
    BigInt,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.constraints import Check, Unique
from piccolo.table import Table

from billing_gql.store.catalog import Plan
from billing_gql.store.customers import Customer
from billing_gql.store.subscriptions import Subscription


class Checkout(Table, tablename="checkouts"):
    id = UUID(primary_key=True)
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.restrict, null=False)
    plan_id = ForeignKey(references=Plan, on_delete=OnDelete.restrict, null=False)
    provider = Varchar(length=50)
    status = Varchar(length=20, default="OPEN")
    # new: a first purchase; renewal: the push renewal of ``subscription_id``.
    purpose = Varchar(length=20, default="new")
    currency = Varchar(length=3)
    quantity = Integer(default=1)
    amount_minor = BigInt()
    amount_paid_minor = BigInt(default=0)
    url = Text(null=True, default=None)
    provider_checkout_id = Varchar(length=255, null=True, default=None)
    payment_reference = Varchar(length=64, null=True, default=None)
    bank_transfer = JSONB(null=True, default=None)
    success_url = Text(null=True, default=None)
    cancel_url = Text(null=True, default=None)
    idempotency_key = Varchar(length=255, null=True, default=None)
    request_fingerprint = Varchar(length=64, null=True, default=None)
    subscription_id = ForeignKey(references=Subscription, on_delete=OnDelete.restrict, null=True)
    error = Text(null=True, default=None)
    # The userErrors code of ``error`` (PROVIDER_ERROR, PROVIDER_UNAVAILABLE, ...).
    error_code = Varchar(length=40, null=True, default=None)
    # The field path the provider named for ``error`` (under createCheckout's input), if any:
    # an idempotent replay reports the error where the first answer did.
    error_field = Array(base_column=Text(), null=True, default=None)
    # When the provider's checkout session was created (null: not yet, or it failed).
    prepared_at = Timestamptz(null=True, default=None)
    # Who is creating the provider session now (a token) and since when (wall time): the
    # claim is committed before the provider is called and cleared by its result; a claim
    # older than its lease (the claimant crashed) may be taken over.
    session_claim = UUID(null=True, default=None)
    session_claimed_at = Timestamptz(null=True, default=None)
    # Refunds across this checkout's payments (a ONE_TIME purchase ends when fully refunded).
    refunded_minor = BigInt(default=0)
    expires_at = Timestamptz(null=True, default=None)
    # A push renewal's period: the subscription's period end when it was issued (the period
    # it pays for starts there). At most one OPEN renewal per (subscription, renews_from).
    renews_from = Timestamptz(null=True, default=None)
    # The period a renewal's payment bought, set when it was paid; it starts at renews_from
    # (or later, when access had lapsed). Null when it bought none: unpaid, or its period had
    # been paid already. At most one paid renewal per (subscription, renews_from): the
    # subscription moves into that period at its start (paid ahead) or at once (paid late).
    paid_period_start = Timestamptz(null=True, default=None)
    paid_period_end = Timestamptz(null=True, default=None)
    # The trial a new purchase grants (0: none): the plan's, unless the customer redeemed
    # this plan's trial before (a trial is once per customer and plan; ``trial_redemptions``).
    trial_days = Integer(default=0)
    completed_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()

    checkouts_status_check = Check("status IN ('OPEN', 'COMPLETED', 'EXPIRED', 'FAILED')")
    checkouts_quantity_check = Check("quantity >= 1")
    checkouts_idempotency_key = Unique(["customer_id", "idempotency_key"])
    checkouts_reference_key = Unique(["provider", "payment_reference"])
    checkouts_provider_ref_key = Unique(["provider", "provider_checkout_id"])
    checkouts_paid_period_check = Check(
        "(paid_period_start IS NULL) = (paid_period_end IS NULL) AND (paid_period_start IS NULL "
        "OR (purpose = 'renewal' AND renews_from IS NOT NULL "
        "AND paid_period_start >= renews_from AND paid_period_end > paid_period_start))"
    )
