"""pytest fixtures of the test kit (enabled by ``pytest_plugins = ["billing_gql.testing"]``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from billing_gql.app import create_app
from billing_gql.settings import (
    AuthSettings,
    BillingSettings,
    DatabaseSettings,
    OutboundSettings,
    PluginSettings,
    Settings,
)
from billing_gql.testing.client import ApiClient
from billing_gql.testing.database import TestDatabase

ADMIN_KEY = "test-admin-key"

MakeApi = Callable[..., AbstractAsyncContextManager[ApiClient]]


@pytest.fixture(scope="session")
def billing_database() -> Iterator[TestDatabase]:
    """One migrated database for the whole run, dropped at the end."""
    db = TestDatabase()
    db.start()
    try:
        yield db
    finally:
        db.stop()


@pytest.fixture
async def clean_database(billing_database: TestDatabase) -> TestDatabase:
    """The run's database, emptied before the test."""
    await billing_database.reset()
    return billing_database


@pytest.fixture
def app_settings(clean_database: TestDatabase) -> Settings:
    """Settings for a test app: the test database, one admin key, no entry-point scanning."""
    return Settings(
        database=DatabaseSettings(url=clean_database.url, pool_min_size=1, pool_max_size=5),
        auth=AuthSettings(admin_keys=(ADMIN_KEY,)),
        plugins=PluginSettings(load_entry_points=False),
        billing=BillingSettings(),
    )


@pytest.fixture
def make_api(app_settings: Settings) -> MakeApi:
    """``async with make_api(plugins=[...], env={...}, billing=...) as api:`` — an app over HTTP.

    :param plugins: plugin objects to register (no entry points are scanned).
    :param env: ``BILLING_GQL_*`` variables the providers read their settings from.
    :param transports: provider name → httpx transport (a fake provider API).
    :param billing: a :class:`BillingSettings` replacing the default one.
    :param outbound: an :class:`OutboundSettings` replacing the default one (redirect origins,
        private webhook targets).
    """

    @asynccontextmanager
    async def factory(
        *,
        plugins: Sequence[object] = (),
        env: Mapping[str, str] | None = None,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        billing: BillingSettings | None = None,
        outbound: OutboundSettings | None = None,
        settings: Settings | None = None,
        http_options: Mapping[str, float] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[ApiClient]:
        base = settings or app_settings
        if env is not None:
            base = replace(base, plugins=replace(base.plugins, env=dict(env)))
        if billing is not None:
            base = replace(base, billing=billing)
        if outbound is not None:
            base = replace(base, outbound=outbound)
        app = create_app(
            base,
            extra_plugins=plugins,
            transports=transports,
            http_options=http_options or {"backoff": 0.0, "max_retry_wait": 0.05},
            apply_migrations=False,
        )
        async with AsyncTestClient(app=app, base_url="http://testserver.local") as http:
            yield ApiClient(http, ADMIN_KEY)

    return factory


@pytest.fixture
async def api(make_api: MakeApi) -> AsyncIterator[ApiClient]:
    """An app with the built-in manual provider only."""
    async with make_api(billing=BillingSettings(manual_provider=True)) as client:
        yield client


def database_url_is_set() -> bool:
    return bool(os.environ.get("DATABASE_URL"))
