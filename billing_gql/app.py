"""The Litestar application: /graphql, /webhooks/{provider}, /healthz, /metrics, and the
lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State

from billing_gql.entitlements.checks import metrics_text
from billing_gql.events import notify
from billing_gql.events.outgoing_webhooks import EXTRAS_TRANSPORT, TRANSPORT_KEY
from billing_gql.graphql.auth import bearer_token, match_admin_key
from billing_gql.graphql.http import DocumentCache, graphql_routes
from billing_gql.graphql.ws import graphql_ws_route
from billing_gql.runtime import Runtime
from billing_gql.settings import Settings
from billing_gql.web.provider_webhooks import webhook_routes

log = logging.getLogger(__name__)


@get("/healthz")
async def healthz(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """200 when the database answers, else 503."""
    runtime: Runtime = request.app.state.runtime
    try:
        await asyncio.wait_for(runtime.db.fetchval("SELECT 1"), timeout=2.0)
    except Exception:
        return Response({"status": "unavailable"}, status_code=503)
    return Response({"status": "ok"}, status_code=200)


@get("/metrics")
async def metrics(request: Request[Any, Any, Any]) -> Response[str]:
    """The process's figures (the entitlement cache's), Prometheus text format; admin key only."""
    runtime: Runtime = request.app.state.runtime
    token = bearer_token(request.headers.get("authorization"))
    if not token or not match_admin_key(token, runtime.settings.auth.admin_keys):
        return Response("an admin key is required\n", status_code=401, media_type="text/plain")
    return Response(metrics_text(runtime), media_type="text/plain; version=0.0.4")


def create_app(
    settings: Settings,
    *,
    extra_plugins: Sequence[object] = (),
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    http_options: Mapping[str, float] | None = None,
    runtime: Runtime | None = None,
    apply_migrations: bool = True,
) -> Litestar:
    """Build the app. The runtime (plugins, database, migrations) starts with the lifespan.

    :param extra_plugins: plugins registered explicitly (tests and the plugin test kit).
    :param transports: per-provider httpx transports replacing the network (fakes); the key
        ``"webhook_endpoints"`` replaces it for outgoing webhooks.
    :param runtime: an already started runtime to serve (it is not closed at shutdown).
    :param apply_migrations: migrate at startup (tests migrate once per run instead).
    """

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = runtime is None
        rt = runtime or await Runtime.start(
            settings,
            extra_plugins=extra_plugins,
            transports=transports,
            http_options=http_options,
            apply_migrations=apply_migrations,
        )
        app.state.runtime = rt
        if transports and TRANSPORT_KEY in transports:
            rt.extras[EXTRAS_TRANSPORT] = transports[TRANSPORT_KEY]
        try:
            yield
        finally:
            await notify.close(rt)
            if own:
                await rt.close()

    documents = DocumentCache(settings.graphql)  # one parse/validate cache for HTTP and WebSocket
    return Litestar(
        route_handlers=[
            *graphql_routes(settings.graphql, documents),
            graphql_ws_route(settings.graphql, documents),
            *webhook_routes(settings.graphql.webhook_max_body_bytes),
            healthz,
            metrics,
        ],
        lifespan=[lifespan],
        state=State({"documents": documents}),
        openapi_config=None,
        # Logging is configured by the process (the CLI), not by the framework.
        logging_config=None,
        debug=False,
    )
