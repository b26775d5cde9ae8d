"""Outgoing webhooks: the app's endpoints and one message per (endpoint, domain event)."""

from __future__ import annotations

from piccolo.columns import (
    UUID,
    Array,
    Boolean,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.constraints import Check, Unique
from piccolo.table import Table


class WebhookEndpoint(Table, tablename="webhook_endpoints"):
    id = UUID(primary_key=True)
    url = Text()
    # Event types it receives: exact ("checkout.completed"), a prefix ("subscription.*") or "*".
    events = Array(base_column=Varchar(length=255))
    # "whsec_" + base64 key, shown once at creation; kept to sign every message.
    secret = Varchar(length=100)
    enabled = Boolean(default=True)
    created_at = Timestamptz()


class WebhookMessage(Table, tablename="webhook_messages"):
    """One domain event for one endpoint: the outbox the delivery sweep works through."""

    id = UUID(primary_key=True)
    endpoint_id = ForeignKey(references=WebhookEndpoint, on_delete=OnDelete.cascade, null=False)
    event_id = Varchar(length=255)
    event_type = Varchar(length=255)
    # The exact JSON body sent on every attempt (the signature covers it).
    body = Text()
    status = Varchar(length=20, default="pending")
    attempts = Integer(default=0)
    next_attempt_at = Timestamptz(null=True, default=None)
    last_status = Integer(null=True, default=None)
    last_error = Text(null=True, default=None)
    created_at = Timestamptz()
    delivered_at = Timestamptz(null=True, default=None)

    webhook_messages_key = Unique(["endpoint_id", "event_id"])
    webhook_messages_status_check = Check("status IN ('pending', 'delivered', 'failed')")
