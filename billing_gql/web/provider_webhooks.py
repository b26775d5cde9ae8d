"""``POST /webhooks/{provider}``: verify on the raw body, store once, answer 2xx.

Status codes (docs/api.md#webhooks-from-providers): 404 unknown or unconfigured provider; 429
over ``BILLING_GQL_WEBHOOK_RATE_LIMIT`` (per provider); 413
body over the limit; 401 bad or missing signature/credentials (nothing stored); 403 a sender
address the provider refuses (nothing stored); 400 unreadable body after a valid signature;
5xx only when the delivery could not be stored; otherwise 2xx — also for a delivery already
seen.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from billing_gql import metrics
from billing_gql.access.rate_limits import hit
from billing_gql.clock import wall_now
from billing_gql.context import ServiceContext
from billing_gql.crashpoints import crashpoint
from billing_gql.entitlements.checks import note_write
from billing_gql.errors import WebhookPayloadError, WebhookSignatureError, WebhookSourceError
from billing_gql.plugins.types import WebhookRequest
from billing_gql.provider_webhooks.apply import apply_delivery
from billing_gql.provider_webhooks.inbox import check_envelope, store_delivery
from billing_gql.routing import redact

log = logging.getLogger(__name__)


def _json(payload: dict[str, Any], status: int) -> Response[dict[str, Any]]:
    return Response(content=payload, status_code=status, media_type="application/json")


def _rate_limited(retry_after: int) -> Response[dict[str, Any]]:
    message = f"rate limit exceeded: retry in {retry_after} s"
    return Response(
        content={
            "ok": False,
            "error": message,
            "errors": [{"message": message, "extensions": {"code": "RATE_LIMITED"}}],
        },
        status_code=429,
        media_type="application/json",
        headers={"Retry-After": str(retry_after)},
    )


def webhook_routes(max_body_bytes: int) -> list[HTTPRouteHandler]:
    @post("/webhooks/{provider:str}", request_max_body_size=max_body_bytes, status_code=200)
    async def provider_webhook(
        request: Request[Any, Any, Any], provider: FromPath[str]
    ) -> Response[dict[str, Any]]:
        runtime: ServiceContext = request.app.state.runtime
        instance = runtime.providers.get_configured(provider)
        if instance is None:
            metrics.count_webhook(None, "unknown_provider")
            return _json({"ok": False, "error": f"no configured provider {provider!r}"}, 404)
        limit = runtime.settings.limits.webhooks
        if limit is not None:
            # Per provider, across every server process, before any work on the body.
            try:
                decision = await hit(runtime.db, f"webhook:{provider.lower()}", limit)
            except Exception:  # cannot count: the store below answers 503 if the database is down
                log.exception("could not count a %s delivery against its rate limit", provider)
            else:
                if not decision.allowed:
                    metrics.count_webhook(provider, "rate_limited")
                    return _rate_limited(decision.retry_after)
        body = await request.body()
        received_at = wall_now()
        headers = {k.lower(): v for k, v in request.headers.items()}
        client = request.client.host if request.client else None
        try:
            envelope = instance.verify_webhook(WebhookRequest(headers, body, received_at, client))
            check_envelope(envelope)
        except WebhookSourceError as exc:
            log.info("%s webhook refused: %s", provider, exc)
            metrics.count_webhook(provider, "forbidden_source")
            return _json({"ok": False, "error": "sender address not allowed"}, 403)
        except WebhookSignatureError as exc:
            log.info("%s webhook rejected: %s", provider, redact(instance, str(exc)))
            metrics.count_webhook(provider, "bad_signature")
            return _json({"ok": False, "error": "invalid signature or credentials"}, 401)
        except WebhookPayloadError as exc:
            log.info("%s webhook unreadable: %s", provider, redact(instance, str(exc)))
            metrics.count_webhook(provider, "unreadable")
            return _json({"ok": False, "error": f"unreadable body: {exc}"}, 400)
        try:
            # Retries are scheduled on the billing clock (so advanceClock drives them in tests).
            due_at = await runtime.clock.now()
            stored = await store_delivery(
                runtime.db, provider, envelope, body, received_at, due_at=due_at
            )
        except Exception:
            log.exception("%s webhook %s could not be stored", provider, envelope.event_id)
            metrics.count_webhook(provider, "store_failed")
            return _json({"ok": False, "error": "the delivery could not be stored"}, 503)
        status = stored.status if stored.created else "duplicate"
        if stored.status in ("received", "failed"):
            crashpoint("webhook.stored")
            # Applied before answering, so the new state is readable when the 2xx is sent.
            try:
                status = await apply_delivery(runtime, stored.id, row=stored.row)
                note_write(runtime)
            except Exception:
                # Stored durably: the worker retries it. The provider still gets its 2xx.
                log.exception("%s webhook %s failed to apply", provider, envelope.event_id)
                status = "failed"
            crashpoint("webhook.applied")
        metrics.count_webhook(provider, status)
        return _json({"ok": True, **dict(instance.webhook_ack)}, 200)

    return [provider_webhook]
