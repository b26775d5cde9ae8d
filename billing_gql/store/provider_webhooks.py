"""The provider-webhook inbox: every accepted delivery, keyed by (provider, event id)."""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    Bytea,
    Integer,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.constraints import Check, Unique
from piccolo.table import Table


class WebhookDelivery(Table, tablename="webhook_deliveries"):
    id = UUID(primary_key=True)
    provider = Varchar(length=50)
    event_id = Varchar(length=255)
    event_type = Varchar(length=255, null=True, default=None)
    status = Varchar(length=20, default="received")
    attempts = Integer(default=0)
    error = Text(null=True, default=None)
    body = Bytea()
    # Only the headers the provider's parser needs; never credentials.
    headers = JSONB(default={})
    occurred_at = Timestamptz(null=True, default=None)
    received_at = Timestamptz()
    applied_at = Timestamptz(null=True, default=None)
    next_attempt_at = Timestamptz(null=True, default=None)

    webhook_deliveries_key = Unique(["provider", "event_id"])
    webhook_deliveries_status_check = Check(
        "status IN ('received', 'applied', 'failed', 'ignored')"
    )
