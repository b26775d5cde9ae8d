"""The provider-webhook inbox: store each verified delivery once, keyed by (provider, event id)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from billing_gql.db.database import Database
from billing_gql.errors import WebhookPayloadError
from billing_gql.plugins.types import WebhookEnvelope
from billing_gql.validation import unstorable

_ID_LENGTH = 255
"""``webhook_deliveries.event_id`` and ``event_type`` are ``varchar(255)``."""


def check_envelope(envelope: WebhookEnvelope) -> None:
    """Refuse (:class:`WebhookPayloadError`, HTTP 400) an envelope the inbox cannot store as
    it is: an event id or type that is empty, longer than the column, or holds text PostgreSQL
    cannot keep (NUL, unpaired surrogates), or kept headers that do. A plugin reads these from
    the signed body, so whatever a provider (or a leaked secret) sends is checked here, once,
    for every plugin."""
    if not envelope.event_id or not envelope.event_id.strip():
        raise WebhookPayloadError("the delivery has no event id")
    texts = [("event id", envelope.event_id), ("event type", envelope.event_type or "")]
    for what, text in texts:
        if len(text) > _ID_LENGTH:
            raise WebhookPayloadError(f"the {what} is longer than {_ID_LENGTH} characters")
    for what, text in [*texts, *(("a kept header", v) for v in envelope.keep_headers.values())]:
        problem = unstorable(text)
        if problem:
            raise WebhookPayloadError(f"the {what} {problem}")


@dataclass(frozen=True)
class Stored:
    id: UUID
    created: bool
    """False when this (provider, event id) was already in the inbox."""
    status: str
    row: Any = None
    """The whole row when this call stored it: applying it needs no read back. (A repeat
    reads only id and status: most are applied already, their bodies not needed.)"""


async def store_delivery(
    db: Database,
    provider: str,
    envelope: WebhookEnvelope,
    body: bytes,
    received_at: datetime,
    *,
    due_at: datetime,
) -> Stored:
    """Insert the delivery unless it is already there (the unique key decides, not a read).

    :param received_at: wall-clock time of arrival (what ``receivedAt`` shows).
    :param due_at: when the worker's retry sweep may first apply it: the billing clock's now
        (``Clock.now``), the timeline every retry of the inbox is scheduled and swept on.
    """
    row = await db.fetchrow(
        _STORE, provider, envelope.event_id, envelope.event_type, body,
        dict(envelope.keep_headers), envelope.occurred_at, received_at, due_at,
    )  # fmt: skip
    if row is not None and row["created"]:
        return Stored(row["id"], True, row["status"], row)
    if row is None:
        # The row a concurrent first delivery was inserting when the statement began: the
        # conflict waited for it, the statement's snapshot is older. Read it now.
        row = await db.fetchrow(
            "SELECT id, status FROM webhook_deliveries WHERE provider = $1 AND event_id = $2",
            provider,
            envelope.event_id,
        )
    assert row is not None
    return Stored(row["id"], False, row["status"])


# One round trip whether new or a repeat (a burst after a provider's outage is ~30 % repeats):
# the insert, or else the stored row's id and status (its body is not needed: most repeats
# are applied already). The columns of a new row are those applying it reads.
_STORE = (
    "WITH new AS (INSERT INTO webhook_deliveries (provider, event_id, event_type, status, "
    "attempts, body, headers, occurred_at, received_at, next_attempt_at) "
    "VALUES ($1,$2,$3,'received',0,$4,$5,$6,$7,$8) "
    "ON CONFLICT (provider, event_id) DO NOTHING RETURNING *) "
    "SELECT true AS created, id, status, provider, event_id, event_type, body, headers, "
    "occurred_at, received_at, attempts FROM new "
    "UNION ALL SELECT false, id, status, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
    "FROM webhook_deliveries WHERE provider = $1 AND event_id = $2 "
    "AND NOT EXISTS (SELECT 1 FROM new)"
)
