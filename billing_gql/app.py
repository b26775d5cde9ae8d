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

from billing_gql.events import notify
from billing_gql.events.outgoing_webhooks import EXTRAS_TRANSPORT, TRANSPORT_KEY
from billing_gql.graphql.http import DocumentCache, graphql_routes
from billing_gql.graphql.ws import graphql_ws_route
from billing_gql.runtime import Runtime
from billing_gql.settings import Settings
from billing_gql.web.invoices import invoice_routes
from billing_gql.web.observe import error_body, metrics_route, request_id_middleware
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
            *invoice_routes(),
            healthz,
            metrics_route,
        ],
        middleware=[request_id_middleware],
        # Litestar's own refusals (413 over the body limit) and unexpected failures answer in
        # the route's shape: a GraphQL error on /graphql, {"ok": false, …} on webhooks.
        exception_handlers={413: error_body, 500: error_body},
        lifespan=[lifespan],
        state=State({"documents": documents}),
        openapi_config=None,
        # Logging is configured by the process (the CLI), not by the framework.
        logging_config=None,
        debug=False,
    )
