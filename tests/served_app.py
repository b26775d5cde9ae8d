"""The app served by uvicorn on loopback inside the test's event loop: unlike Litestar's test
client (which runs one request at a time), requests run concurrently, as in production."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import httpx
import uvicorn

from billing_gql.app import create_app
from billing_gql.settings import Settings
from billing_gql.testing import ADMIN_KEY, ApiClient


@asynccontextmanager
async def served(
    settings: Settings,
    *,
    plugins: Sequence[object] = (),
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    clients: int = 100,
) -> AsyncIterator[ApiClient]:
    """``async with served(settings, plugins=…, transports=…) as api`` — a served app."""
    app = create_app(
        settings,
        extra_plugins=plugins,
        transports=transports,
        http_options={"backoff": 0.0, "max_retry_wait": 0.05},
        apply_migrations=False,
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    limits = httpx.Limits(max_connections=clients)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits
        ) as http:
            yield ApiClient(http, ADMIN_KEY)
    finally:
        server.should_exit = True
        await serving
