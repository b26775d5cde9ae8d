"""Refund table: one row per refund of a payment (declarations only; every write is in
:mod:`billing_gql.store.refunds_sql`)."""

from __future__ import annotations

from piccolo.columns import (
    UUID,
    BigInt,
    BigSerial,
    Boolean,
    ForeignKey,
    OnDelete,
    Timestamptz,
    Varchar,
)
from piccolo.constraints import Check, Unique
from piccolo.table import Table

from billing_gql.store.payments import Payment


class Refund(Table, tablename="refunds"):
    id = UUID(primary_key=True)
    payment_id = ForeignKey(references=Payment, on_delete=OnDelete.restrict, null=False)
    provider = Varchar(length=50)
    amount_minor = BigInt()
    currency = Varchar(length=3)
    reason = Varchar(length=500, null=True, default=None)
    # pending (reserved, the provider not answered yet), succeeded, failed
    status = Varchar(length=20)
    # api: refundPayment; provider: reported by the provider (its dashboard, its API)
    origin = Varchar(length=20)
    provider_refund_id = Varchar(length=255, null=True, default=None)
    # The operator's bank reference of a refund made outside the service (SePay, manual).
    reference = Varchar(length=255, null=True, default=None)
    idempotency_key = Varchar(length=255, null=True, default=None)
    revoke_access = Boolean(default=False)
    failure_reason = Varchar(length=1000, null=True, default=None)
    # The credit note issued for this refund (an invoice), once there is one.
    credit_note_id = UUID(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    # Insertion order (billing time may stand still under the test clock).
    seq = BigSerial()

    refunds_amount_check = Check("amount_minor > 0")
    refunds_status_check = Check("status IN ('pending', 'succeeded', 'failed')")
    refunds_origin_check = Check("origin IN ('api', 'provider')")
    refunds_idempotency_key_key = Unique(["idempotency_key"])
    refunds_provider_refund_key = Unique(["provider", "provider_refund_id"])
