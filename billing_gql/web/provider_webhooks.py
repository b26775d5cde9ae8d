"""``POST /webhooks/{provider}``: verify on the raw body, store once, answer 2xx.

Status codes (docs/api.md#webhooks-from-providers): 404 unknown or unconfigured provider; 413
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

from billing_gql.clock import wall_now
from billing_gql.context import ServiceContext
from billing_gql.entitlements.checks import note_write
from billing_gql.errors import WebhookPayloadError, WebhookSignatureError, WebhookSourceError
from billing_gql.plugins.types import WebhookRequest
from billing_gql.provider_webhooks.apply import apply_delivery
from billing_gql.provider_webhooks.inbox import store_delivery
from billing_gql.routing import redact

log = logging.getLogger(__name__)


def _json(payload: dict[str, Any], status: int) -> Response[dict[str, Any]]:
    return Response(content=payload, status_code=status, media_type="application/json")


def webhook_routes(max_body_bytes: int) -> list[HTTPRouteHandler]:
    @post("/webhooks/{provider:str}", request_max_body_size=max_body_bytes, status_code=200)
    async def provider_webhook(
        request: Request[Any, Any, Any], provider: FromPath[str]
    ) -> Response[dict[str, Any]]:
        runtime: ServiceContext = request.app.state.runtime
        instance = runtime.providers.get_configured(provider)
        if instance is None:
            return _json({"ok": False, "error": f"no configured provider {provider!r}"}, 404)
        body = await request.body()
        received_at = wall_now()
        headers = {k.lower(): v for k, v in request.headers.items()}
        client = request.client.host if request.client else None
        try:
            envelope = instance.verify_webhook(WebhookRequest(headers, body, received_at, client))
        except WebhookSourceError as exc:
            log.info("%s webhook refused: %s", provider, exc)
            return _json({"ok": False, "error": "sender address not allowed"}, 403)
        except WebhookSignatureError as exc:
            log.info("%s webhook rejected: %s", provider, redact(instance, str(exc)))
            return _json({"ok": False, "error": "invalid signature or credentials"}, 401)
        except WebhookPayloadError as exc:
            log.info("%s webhook unreadable: %s", provider, redact(instance, str(exc)))
            return _json({"ok": False, "error": f"unreadable body: {exc}"}, 400)
        try:
            # Retries are scheduled on the billing clock (so advanceClock drives them in tests).
            due_at = await runtime.clock.now()
            stored = await store_delivery(
                runtime.db, provider, envelope, body, received_at, due_at=due_at
            )
        except Exception:
            log.exception("%s webhook %s could not be stored", provider, envelope.event_id)
            return _json({"ok": False, "error": "the delivery could not be stored"}, 503)
        if stored.status in ("received", "failed"):
            # Applied before answering, so the new state is readable when the 2xx is sent.
            try:
                await apply_delivery(runtime, stored.id, row=stored.row)
                note_write(runtime)
            except Exception:
                # Stored durably: the worker retries it. The provider still gets its 2xx.
                log.exception("%s webhook %s failed to apply", provider, envelope.event_id)
        return _json({"ok": True, **dict(instance.webhook_ack)}, 200)

    return [provider_webhook]
