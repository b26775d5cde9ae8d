"""The HTTP side of observability: the request id on every request, ``GET /metrics``, and
error bodies in the shape of the route they answer for.

- :func:`request_id_middleware` (ASGI): the client's ``X-Request-ID`` (when sane) or a new
  one, current while the request runs (:data:`billing_gql.logs.REQUEST_ID`) and returned in
  the response's ``X-Request-ID``.
- ``GET /metrics``: Prometheus text (:mod:`billing_gql.metrics`, the entitlement cache's
  figures included); open unless ``BILLING_GQL_METRICS_TOKEN`` is set, then
  ``Authorization: Bearer <token>`` (401 otherwise).
- :func:`error_body`: what Litestar's own refusals (a body over the limit: 413; an unexpected
  failure: 500) answer — on ``/graphql`` a GraphQL error (``{"errors": [{"message",
  "extensions": {"code"}}]}``), on a webhook route the route's ``{"ok": false, "error"}``.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from billing_gql import metrics, tracing
from billing_gql.context import ServiceContext
from billing_gql.entitlements.checks import cache_figures
from billing_gql.logs import REQUEST_ID, request_id_for

log = logging.getLogger(__name__)

_HEADER = b"x-request-id"


def _route(path: str) -> str:
    """The route template of ``path`` (a span name must not hold ids or provider names)."""
    if path.startswith("/webhooks/"):
        return "/webhooks/{provider}"
    return path if path in ("/graphql", "/healthz", "/metrics") else "other"


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == _HEADER), None)
        request_id = request_id_for(given.decode("latin-1") if given is not None else None)
        encoded = request_id.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                tracing.annotate(**{"http.response.status_code": message["status"]})
                headers = [(k, v) for k, v in message.get("headers", []) if k != _HEADER]
                message = {**message, "headers": [*headers, (_HEADER, encoded)]}
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            if not tracing.ENABLED:
                await app(scope, receive, send_with_id)
                return
            method = scope.get("method", "GET")
            with tracing.span(
                f"{method} {_route(scope['path'])}",
                {
                    "http.request.method": method,
                    "url.path": scope["path"],
                    "billing_gql.request_id": request_id,
                },
                server=True,
            ):
                await app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)

    return middleware


_CODES = {413: "REQUEST_TOO_LARGE", 500: "INTERNAL_SERVER_ERROR"}
_MESSAGES = {
    413: "the request body is larger than the server accepts",
    500: "Internal server error",
}


def error_body(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Litestar's refusals (and unexpected failures) in the shape of the route's answers."""
    status = 413 if isinstance(exc, HTTPException) and exc.status_code == 413 else 500
    if status == 500:
        log.error("request to %s failed", request.url.path, exc_info=exc)
    message = _MESSAGES[status]
    if request.url.path.startswith("/webhooks/"):
        return Response({"ok": False, "error": message}, status_code=status)
    code = _CODES[413 if status == 413 else 500]
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return Response(body, status_code=status, media_type="application/json")


async def _refresh_gauges(runtime: ServiceContext) -> None:
    """Read the shared state the gauges show: the job queue, the outbox, the pool."""
    pool = runtime.db.pool
    size, idle = pool.get_size(), pool.get_idle_size()
    metrics.set_db_pool(size - idle, idle, pool.get_max_size())
    jobs: dict[str, int] = {}
    if await runtime.db.fetchval("SELECT to_regclass('procrastinate_jobs') IS NOT NULL"):
        rows = await runtime.db.fetch(
            "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs GROUP BY 1"
        )
        jobs = {r["status"]: r["n"] for r in rows}
    pending = await runtime.db.fetchval(
        "SELECT count(*) FROM webhook_messages WHERE status = 'pending'"
    )
    metrics.set_queue(jobs, int(pending or 0))


def _copy_cache_figures(runtime: ServiceContext) -> None:
    """The entitlement cache's figures (in memory: no database needed)."""
    metrics.set_entitlement_cache(cache_figures(runtime))


@get("/metrics", status_code=200)
async def metrics_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    runtime: ServiceContext = request.app.state.runtime
    token = runtime.settings.observability.metrics_token
    if token is not None:
        scheme, _, given = (request.headers.get("authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return Response(
                b"metrics need Authorization: Bearer <BILLING_GQL_METRICS_TOKEN>\n",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": "Bearer"},
            )
    _copy_cache_figures(runtime)
    try:
        await _refresh_gauges(runtime)
    except Exception:
        # The process's counters are still worth scraping when the database is away.
        log.exception("metrics: the database gauges could not be read")
    return Response(metrics.scrape(), media_type=metrics.CONTENT_TYPE_LATEST)
