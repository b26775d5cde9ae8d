"""Fixtures of the Polar plugin's tests: a fake Polar, a provider wired to it, the schema,
and the end-to-end world (an app with the plugin on the fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from openapi_core import OpenAPI
from polar_world import UPSERT, World, make_plan

import billing_gql_polar.plugin
from billing_gql.testing import TestDatabase, provider_for
from billing_gql_polar.plugin import PolarProvider
from billing_gql_polar.testing import FakePolar, load_spec


@pytest.fixture(scope="session")
def openapi() -> OpenAPI:
    """Polar's OpenAPI document (2026-10) for openapi-core (built once: it checks the spec)."""
    return OpenAPI.from_dict(load_spec())


@pytest.fixture
def fake() -> FakePolar:
    return FakePolar()


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the HTTP client took between retries (recorded, not slept)."""
    return []


@pytest.fixture
async def polar(fake: FakePolar, sleeps: list[float]) -> AsyncIterator[PolarProvider]:
    provider = provider_for(
        PolarProvider,
        fake.transport(),
        {
            "ACCESS_TOKEN": fake.access_token,
            "WEBHOOK_SECRET": fake.webhook_secret,
            "API_BASE": "https://sandbox-api.polar.sh",
        },
        sleeps=sleeps,
    )
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture
async def world(
    make_api: Any, clean_database: TestDatabase, app_settings: Any
) -> AsyncIterator[World]:
    """The app with the Polar plugin on a fresh fake Polar, plan ``pro`` on a Polar product
    whose benefit grants ``api_calls`` (limit 1000), and customer ``usr_42``."""
    fake = FakePolar()
    async with make_api(
        plugins=[billing_gql_polar.plugin],
        env=fake.env(),
        transports={"polar": fake.transport()},
    ) as api:
        settings = replace(app_settings, plugins=replace(app_settings.plugins, env=fake.env()))
        w = World(api, fake, clean_database.url, settings)
        flag = fake.create_benefit(
            description="API access", metadata={"feature": "api_calls", "limit": 1000}
        )
        w.product = fake.create_product(name="Pro", prices={"usd": 2900}, benefits=[flag])
        await make_plan(w, "pro", w.product)
        data = await api.admin(
            UPSERT, {"input": {"externalId": "usr_42", "email": "ann@example.com", "name": "Ann"}}
        )
        w.customer = data["upsertCustomer"]["customer"]["id"]
        yield w
