"""Outgoing webhooks: the app's endpoints receive domain events, signed per Standard Webhooks.

Flow: ``runtime.emit(event)`` reaches :class:`WebhookOutbox` (a core observer plugin), which
writes one ``webhook_messages`` row per enabled endpoint whose ``events`` match — the unique
(endpoint, event id) key makes a repeated emit harmless — and nudges the worker. The
``deliver_webhooks`` sweep then claims due messages (``FOR UPDATE SKIP LOCKED``, moving their
``next_attempt_at`` to the retry time in the same statement, so a crashed attempt is retried and
two workers never send one attempt twice), POSTs them, and records the outcome. Failures retry
with exponential backoff on the billing clock until :data:`MAX_ATTEMPTS`, then the message is
``failed``.

Targets: https URLs whose host resolves to public addresses only, checked at registration and
again at every delivery, which connects to the checked address (:mod:`.targets`), unless
``BILLING_GQL_ALLOW_PRIVATE_WEBHOOK_TARGETS``; redirects are not followed and at most
:data:`MAX_RESPONSE_BYTES` of an answer is read.

Headers (https://www.standardwebhooks.com): ``webhook-id`` (the event id, the same on every
retry so receivers can dedupe), ``webhook-timestamp`` (wall-clock seconds of this attempt: the
receiver checks it against its own clock), ``webhook-signature`` = ``v1,`` + base64
HMAC-SHA256 of ``"{id}.{timestamp}.{body}"`` keyed with the base64-decoded secret after
``whsec_``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx

from billing_gql import metrics
from billing_gql.clock import wall_now
from billing_gql.crashpoints import crashpoint
from billing_gql.db.database import dumps
from billing_gql.events.targets import (
    TARGET_NOT_ALLOWED,
    TargetRefused,
    check_target,
    pinned_request,
)
from billing_gql.plugins.hookspecs import hookimpl
from billing_gql.plugins.types import DomainEvent
from billing_gql.validation import Problems

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext
    from billing_gql.db.database import Database

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
TRANSPORT_KEY = "webhook_endpoints"
"""Key of the outgoing-webhook transport in ``create_app(transports=…)`` (tests)."""
EXTRAS_TRANSPORT = "events.transport"
MAX_ATTEMPTS = 12
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=12)
"""After failed attempt n, the next one waits ``FIRST_RETRY * 2**(n-1)``, at most ``MAX_RETRY``
(computed by :func:`_claim` in SQL, when it leases the attempt)."""
BATCH = 50
CONCURRENCY = 8
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
ATTEMPT_SECONDS = 30.0
"""Upper bound of one attempt, however slowly the receiver answers."""
MAX_RESPONSE_BYTES = 64 * 1024
"""At most this much of a receiver's answer is read (only its status matters)."""
MAX_URL = 2048
_EVENT_PATTERN = "abcdefghijklmnopqrstuvwxyz0123456789_."


# --- signing -----------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secret: str, message_id: str, body: str, timestamp: int) -> dict[str, str]:
    """The Standard Webhooks headers (and content type) of one attempt."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def event_body(event: DomainEvent) -> str:
    """The JSON body of ``event``: ``{"type", "timestamp", "data"}`` (Standard Webhooks)."""
    return dumps(
        {"type": event.type, "timestamp": event.occurred_at.isoformat(), "data": dict(event.data)}
    )


# --- endpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    id: UUID
    url: str
    events: tuple[str, ...]
    enabled: bool
    created_at: datetime


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: Endpoint
    secret: str
    """Shown once; never stored anywhere the API shows again."""


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row["id"],
        url=row["url"],
        events=tuple(row["events"]),
        enabled=row["enabled"],
        created_at=row["created_at"],
    )


def _valid_event_pattern(value: str) -> bool:
    if value == "*":
        return True
    body = value.removesuffix(".*")
    parts = body.split(".")
    return bool(body) and all(part and all(ch in _EVENT_PATTERN for ch in part) for part in parts)


async def create_endpoint(
    db: Database,
    now: datetime,
    url: str,
    events: Sequence[str],
    *,
    allow_private: bool = False,
) -> CreatedEndpoint:
    """Validate and store an endpoint. Raises ``UserInputErrors`` (fields ``url``,
    ``events``, ``events.N``) and writes nothing on error.

    Unless ``allow_private`` (``BILLING_GQL_ALLOW_PRIVATE_WEBHOOK_TARGETS``), the URL must be
    https and its host must resolve to public addresses only (WEBHOOK_TARGET_NOT_ALLOWED; see
    :mod:`billing_gql.events.targets`)."""
    problems = Problems()
    url = (url or "").strip()
    parts = urlsplit(url)
    if len(url) > MAX_URL:
        problems.add("INVALID_INPUT", f"the URL is longer than {MAX_URL} characters", "url")
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        problems.add("INVALID_INPUT", "the URL must be an absolute http(s) URL", "url")
    elif parts.username or parts.password:
        problems.add("INVALID_INPUT", "the URL must not carry credentials", "url")
    elif not allow_private:
        try:
            await check_target(url)
        except TargetRefused as exc:
            problems.add(TARGET_NOT_ALLOWED, str(exc), "url")
    if not events:
        problems.add("INVALID_INPUT", 'name at least one event type (or "*")', "events")
    chosen: list[str] = []
    for index, raw in enumerate(events):
        value = raw.strip().lower()
        if len(value) > 255 or not _valid_event_pattern(value):
            problems.add(
                "INVALID_INPUT",
                'an event type is dotted lower-case words ("checkout.completed"), optionally '
                'ending in ".*", or "*"',
                "events",
                index,
            )
        elif value not in chosen:
            chosen.append(value)
    problems.raise_if_any()
    secret = new_secret()
    async with db.transaction() as conn:  # one statement; a transaction for the audit row
        row = await conn.fetchrow(
            "INSERT INTO webhook_endpoints (url, events, secret, enabled, created_at) "
            "VALUES ($1, $2, $3, true, $4) RETURNING id, url, events, enabled, created_at",
            url,
            chosen,
            secret,
            now,
        )
    assert row is not None
    return CreatedEndpoint(_endpoint(row), secret)


async def list_endpoints(db: Database) -> list[Endpoint]:
    """Every endpoint, newest first."""
    rows = await db.fetch(
        "SELECT id, url, events, enabled, created_at FROM webhook_endpoints "
        "ORDER BY created_at DESC, id DESC"
    )
    return [_endpoint(r) for r in rows]


async def delete_endpoint(db: Database, endpoint_id: UUID) -> Endpoint | None:
    """Remove an endpoint and its undelivered messages; ``None`` when there is none."""
    async with db.transaction() as conn:  # one statement; a transaction for the audit row
        row = await conn.fetchrow(
            "DELETE FROM webhook_endpoints WHERE id = $1 "
            "RETURNING id, url, events, enabled, created_at",
            endpoint_id,
        )
    return _endpoint(row) if row is not None else None


# --- the outbox --------------------------------------------------------------------------


async def enqueue_event(runtime: ServiceContext, event: DomainEvent) -> int:
    """Write one pending message per enabled endpoint subscribed to ``event.type``."""
    now = await runtime.clock.now()
    status = await runtime.db.execute(
        "INSERT INTO webhook_messages "
        "(endpoint_id, event_id, event_type, body, status, attempts, next_attempt_at, created_at) "
        "SELECT e.id, $1, $2::text, $3, 'pending', 0, $4, $4 FROM webhook_endpoints e "
        "WHERE e.enabled AND ($2::text = ANY (e.events) OR '*' = ANY (e.events) OR EXISTS ("
        "  SELECT 1 FROM unnest(e.events) AS p WHERE p LIKE '%.*' "
        "  AND starts_with($2::text, left(p, -1)))) "
        "ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        event.id,
        event.type,
        event_body(event),
        now,
    )
    return int(status.rsplit(" ", 1)[-1])


class WebhookOutbox:
    """The core observer that turns domain events into outgoing webhook messages."""

    def __init__(self, runtime: ServiceContext) -> None:
        self.runtime = runtime

    @hookimpl
    def on_billing_event(self, event: DomainEvent) -> Any:
        return self._handle(event)

    async def _handle(self, event: DomainEvent) -> None:
        queued = await enqueue_event(self.runtime, event)
        if queued:
            worker = self.runtime.extras.get("worker")
            if worker is not None:
                await worker.nudge()


OUTBOX_PLUGIN = "billing_gql.events.outbox"


def install_outbox(runtime: ServiceContext) -> None:
    """Register the outbox observer on ``runtime`` (once)."""
    if not runtime.pm.has_plugin(OUTBOX_PLUGIN):
        runtime.pm.register(WebhookOutbox(runtime), name=OUTBOX_PLUGIN)


# --- delivery ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claimed:
    id: UUID
    event_id: str
    body: str
    attempts: int
    url: str
    secret: str


async def deliver_due_messages(runtime: ServiceContext, now: datetime) -> int:
    """The ``deliver_webhooks`` sweep: send every message due at ``now``; return how many
    attempts were made."""
    total = 0
    transport = runtime.extras.get(EXTRAS_TRANSPORT)
    allow_private = runtime.settings.outbound.allow_private_webhook_targets
    async with httpx.AsyncClient(
        timeout=TIMEOUT, transport=transport, follow_redirects=False
    ) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def attempt(message: _Claimed) -> None:
            async with gate:
                await _attempt(runtime.db, client, message, now, allow_private)

        while True:
            claimed = await _claim(runtime.db, now)
            if not claimed:
                return total

            await asyncio.gather(*(attempt(m) for m in claimed))
            total += len(claimed)
            if len(claimed) < BATCH:
                return total


async def _claim(db: Database, now: datetime) -> list[_Claimed]:
    """Take due messages, scheduling each one's retry in the same statement (the lease)."""
    rows = await db.fetch(
        "WITH due AS (SELECT m.id FROM webhook_messages m "  # noqa: S608 (BATCH is a constant)
        "WHERE m.status = 'pending' AND m.next_attempt_at <= $1 "
        f"ORDER BY m.next_attempt_at LIMIT {BATCH} FOR UPDATE SKIP LOCKED) "
        "UPDATE webhook_messages m SET attempts = m.attempts + 1, "
        "next_attempt_at = $1 + LEAST($2::interval * power(2, m.attempts), $3::interval) "
        "FROM due, webhook_endpoints e "
        "WHERE m.id = due.id AND e.id = m.endpoint_id "
        "RETURNING m.id, m.event_id, m.body, m.attempts, e.url, e.secret",
        now,
        FIRST_RETRY,
        MAX_RETRY,
    )
    return [
        _Claimed(r["id"], r["event_id"], r["body"], r["attempts"], r["url"], r["secret"])
        for r in rows
    ]


async def _send(
    client: httpx.AsyncClient, message: _Claimed, headers: dict[str, str], allow_private: bool
) -> int:
    """POST one attempt and return the answer's status. Unless private targets are allowed,
    the host is resolved and checked again now and the request connects to the checked address
    (DNS rebinding); redirects are not followed and at most :data:`MAX_RESPONSE_BYTES` of the
    answer is read."""
    content = message.body.encode()
    async with asyncio.timeout(ATTEMPT_SECONDS):  # the name's resolution included
        if allow_private:
            request = client.build_request("POST", message.url, content=content, headers=headers)
        else:
            request = pinned_request(client, await check_target(message.url), content, headers)
        response = await client.send(request, stream=True)
        try:
            received = 0
            # (A transport's ready-made answer, as a test fake gives, has no stream left.)
            if not response.is_stream_consumed:
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received >= MAX_RESPONSE_BYTES:
                        break
        finally:
            await response.aclose()
    return response.status_code


async def _attempt(
    db: Database, client: httpx.AsyncClient, message: _Claimed, now: datetime, allow_private: bool
) -> None:
    timestamp = int(wall_now().timestamp())
    headers = signed_headers(message.secret, message.event_id, message.body, timestamp)
    status: int | None = None
    error: str | None = None
    try:
        status = await _send(client, message, headers, allow_private)
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except TargetRefused as exc:
        error = f"{TARGET_NOT_ALLOWED}: {exc}"
    except (httpx.HTTPError, TimeoutError) as exc:
        # The exception's text may hold the URL (and so a token in a query string): keep the kind.
        error = type(exc).__name__
    if error is None:
        crashpoint("outgoing.sent")
        metrics.count_outgoing_delivery("delivered")
        await db.execute(
            "UPDATE webhook_messages SET status = 'delivered', delivered_at = $2, "
            "last_status = $3, last_error = NULL, next_attempt_at = NULL WHERE id = $1",
            message.id,
            now,
            status,
        )
        return
    give_up = message.attempts >= MAX_ATTEMPTS
    metrics.count_outgoing_delivery("abandoned" if give_up else "failed")
    log.warning(
        "webhook message %s attempt %d failed: %s%s",
        message.id,
        message.attempts,
        error,
        " (giving up)" if give_up else "",
    )
    await db.execute(
        "UPDATE webhook_messages SET last_status = $2, last_error = $3, "
        "status = CASE WHEN $4 THEN 'failed' ELSE status END, "
        "next_attempt_at = CASE WHEN $4 THEN NULL ELSE next_attempt_at END WHERE id = $1",
        message.id,
        status,
        error,
        give_up,
    )
