"""Payment table: money a provider reported, matched to a checkout or kept unmatched."""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    BigInt,
    ForeignKey,
    OnDelete,
    Timestamptz,
    Varchar,
)
from piccolo.constraints import Check, Unique
from piccolo.table import Table

from billing_gql.store.checkout import Checkout
from billing_gql.store.customers import Customer
from billing_gql.store.subscriptions import Subscription


class Payment(Table, tablename="payments"):
    id = UUID(primary_key=True)
    provider = Varchar(length=50)
    # The provider's id for the money movement (Stripe invoice/charge, Polar order, bank ref).
    provider_ref = Varchar(length=255, null=True, default=None)
    status = Varchar(length=20)
    amount_minor = BigInt()
    refunded_minor = BigInt(default=0)
    currency = Varchar(length=3)
    checkout_id = ForeignKey(references=Checkout, on_delete=OnDelete.restrict, null=True)
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.restrict, null=True)
    subscription_id = ForeignKey(references=Subscription, on_delete=OnDelete.restrict, null=True)
    reference = Varchar(length=255, null=True, default=None)
    details = JSONB(null=True, default=None)
    received_at = Timestamptz()
    created_at = Timestamptz()

    payments_status_check = Check(
        "status IN ('succeeded', 'failed', 'refunded', 'partially_refunded', 'unmatched', "
        "'flagged', 'disputed', 'dispute_won', 'dispute_lost')"
    )
    payments_provider_ref_key = Unique(["provider", "provider_ref"])
