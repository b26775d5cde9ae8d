"""Applying stored provider deliveries: parse through the plugin, re-fetch the snapshots that are
not newer than what we hold (:mod:`billing_gql.applier.refresh`), apply in one
transaction, record the outcome on the delivery.

Statuses: ``received`` (stored, not applied yet) → ``applied`` (its events are in), ``ignored``
(it carried no events), or ``failed`` (kept with its error; ``attempts`` counts tries and
``next_attempt_at`` says when the worker's sweep (:func:`apply_due_deliveries`) tries again,
backing off exponentially). ``applied`` and ``ignored`` are final: replaying them is a no-op.

The retry schedule runs on the billing clock (``Clock.now``) from end to end: a stored
delivery is due at the billing time it arrived, each failure pushes it ``backoff`` ahead of the
billing time of that attempt, and the sweep compares with the billing clock — so with the test
clock ``advanceClock`` drives the retries (it stops at each one: :func:`next_delivery_attempt`).
``receivedAt`` stays the wall-clock time of arrival.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.applier.engine import ApplyError, apply_events
from billing_gql.applier.refresh import refresh_events
from billing_gql.context import ServiceContext
from billing_gql.money import AmountTooLarge, shown
from billing_gql.plugins.types import BillingEvent, DomainEvent, StoredDelivery
from billing_gql.routing import error_text, log_failure, redact

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "MAX_ATTEMPTS",
    "Delivery",
    "apply_delivery",
    "apply_due_deliveries",
    "backoff",
    "load_deliveries",
    "next_delivery_attempt",
    "replay_delivery",
]

log = logging.getLogger(__name__)

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=6)
MAX_ATTEMPTS = 25
"""After this many failed tries the delivery stays ``failed`` with no next attempt (an admin
can still replay it)."""
_LEASE = timedelta(minutes=5)


class DeliveryStatus(StrEnum):
    """An inbox row's status: ``WebhookDelivery.status`` in the schema (the DB constraint
    ``webhook_deliveries_status_check`` lists the same values)."""

    RECEIVED = "received"
    APPLIED = "applied"
    FAILED = "failed"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Delivery:
    """An inbox row as the admin queries show it."""

    id: UUID
    provider: str
    event_id: str
    event_type: str | None
    status: DeliveryStatus
    attempts: int
    error: str | None
    received_at: datetime
    applied_at: datetime | None
    next_attempt_at: datetime | None


def delivery_from_row(row: Any) -> Delivery:
    return Delivery(
        id=row["id"],
        provider=row["provider"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=DeliveryStatus(row["status"]),
        attempts=row["attempts"],
        error=row["error"],
        received_at=row["received_at"],
        applied_at=row["applied_at"],
        next_attempt_at=row["next_attempt_at"],
    )


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failed ones: 30 s, 1 min, 2 min … ≤ 6 h."""
    wait: timedelta = BACKOFF_BASE * (2 ** max(attempts - 1, 0))
    return min(wait, BACKOFF_CAP)


async def load_deliveries(
    conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[UUID]
) -> list[Delivery]:
    rows = await conn.fetch(
        "SELECT id, provider, event_id, event_type, status, attempts, error, received_at, "
        "applied_at, next_attempt_at FROM webhook_deliveries WHERE id = ANY($1::uuid[])",
        list(ids),
    )
    return [delivery_from_row(r) for r in rows]


def _stored(row: asyncpg.Record) -> StoredDelivery:
    return StoredDelivery(
        provider=row["provider"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        body=bytes(row["body"]),
        headers=row["headers"] or {},
        received_at=row["received_at"],
        occurred_at=row["occurred_at"],
    )


async def apply_delivery(runtime: ServiceContext, delivery_id: UUID, *, row: Any = None) -> str:
    """Parse and apply one stored delivery; return its status afterwards.

    Never raises for a provider or apply problem: the delivery is marked ``failed`` with the
    (redacted) error, ``attempts + 1`` and the next attempt time, and the worker retries it
    (not an amount past ``MAX_AMOUNT_MINOR``: that one stays failed with no next attempt).

    :param row: its whole inbox row, when the caller has just stored it (the webhook
        route): spares reading the body back. Whether it is still to apply is decided under
        the row's lock either way.
    """
    db = runtime.db
    if row is None:
        row = await db.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1", delivery_id)
    if row is None:
        raise LookupError(f"no webhook delivery {delivery_id}")
    if row["status"] in ("applied", "ignored"):
        return str(row["status"])
    provider = runtime.providers.get_configured(row["provider"])
    now = await runtime.clock.now()
    out: list[DomainEvent] = []
    try:
        if provider is None:
            raise ApplyError(f"provider {shown(row['provider'])} is not configured")
        events: Sequence[BillingEvent] = await provider.parse_webhook(_stored(row))
        # Snapshots not newer than what we hold are re-fetched first, outside the transaction.
        events, refreshed = await refresh_events(runtime, provider, events)
        final = "applied" if events else "ignored"
        async with db.transaction() as conn:
            # Claim the delivery and mark its outcome in one statement (its row lock
            # serializes concurrent attempts; an error below rolls the mark back with the rest).
            claimed = await conn.fetchval(
                "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, "
                "error = NULL, applied_at = $3, next_attempt_at = NULL "
                "WHERE id = $1 AND status IN ('received', 'failed') RETURNING id",
                delivery_id,
                final,
                now,
            )
            if claimed is None:  # a concurrent attempt got there first
                status = await conn.fetchval(
                    "SELECT status FROM webhook_deliveries WHERE id = $1", delivery_id
                )
                return str(status)
            out = await apply_events(runtime, conn, provider.name, events, now, refreshed=refreshed)
    except Exception as exc:
        message = (
            redact(provider, str(exc)) if isinstance(exc, ApplyError) else error_text(provider, exc)
        )
        if isinstance(exc, ApplyError):
            log.warning(
                "%s delivery %s failed to apply: %s", row["provider"], row["event_id"], message
            )
        else:
            log_failure(
                log,
                provider,
                exc,
                "%s delivery %s failed to apply",
                row["provider"],
                row["event_id"],
                level=logging.WARNING,
            )
        attempts = int(row["attempts"]) + 1
        # An amount past the bound fails the same way every time: no retries (an admin may
        # still replay it).
        permanent = isinstance(exc, AmountTooLarge)
        next_at = now + backoff(attempts) if attempts < MAX_ATTEMPTS and not permanent else None
        await db.execute(
            "UPDATE webhook_deliveries SET status = 'failed', attempts = attempts + 1, error = $2, "
            "next_attempt_at = $3 WHERE id = $1 AND status IN ('received', 'failed')",
            delivery_id,
            message,
            next_at,
        )
        return "failed"
    for event in out:
        await runtime.emit(event)
    return final


async def apply_due_deliveries(runtime: ServiceContext, now: datetime, *, limit: int = 100) -> int:
    """Apply deliveries whose next attempt is due at ``now`` (the worker's retry sweep).

    Each is leased first (its next attempt pushed a few minutes ahead, rows locked with
    ``SKIP LOCKED``), so several workers never take the same delivery at once.

    :returns: how many ended ``applied`` or ``ignored``.
    """
    rows = await runtime.db.fetch(
        "UPDATE webhook_deliveries SET next_attempt_at = $2 WHERE id IN ("
        "SELECT id FROM webhook_deliveries WHERE status IN ('received', 'failed') "
        "AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) "
        "RETURNING id",
        now,
        now + _LEASE,
        limit,
    )
    done = 0
    for row in rows:
        if await apply_delivery(runtime, row["id"]) in ("applied", "ignored"):
            done += 1
    return done


async def next_delivery_attempt(runtime: ServiceContext, now: datetime) -> datetime | None:
    """When the next failed (or not yet applied) delivery falls due after ``now``."""
    return await runtime.db.fetch_time(
        "SELECT min(next_attempt_at) FROM webhook_deliveries "
        "WHERE status IN ('received', 'failed') AND next_attempt_at > $1",
        now,
    )


async def replay_delivery(runtime: ServiceContext, delivery_id: UUID) -> Delivery | None:
    """Apply a stored delivery now, whatever its next attempt time; a no-op for one already
    ``applied`` or ``ignored``. ``None`` when there is no such delivery."""
    exists = await runtime.db.fetchval(
        "SELECT 1 FROM webhook_deliveries WHERE id = $1", delivery_id
    )
    if exists is None:
        return None
    await apply_delivery(runtime, delivery_id)
    found = await load_deliveries(runtime.db.pool, [delivery_id])
    return found[0] if found else None
