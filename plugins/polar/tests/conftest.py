"""Fixtures of the Polar plugin's tests: a fake Polar, a provider wired to it, the schema."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from openapi_core import OpenAPI

from billing_gql import HttpClientFactory, ProviderContext, ProviderSettings
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
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    settings = ProviderSettings(
        "polar",
        {
            "ACCESS_TOKEN": fake.access_token,
            "WEBHOOK_SECRET": fake.webhook_secret,
            "API_BASE": "https://sandbox-api.polar.sh",
        },
        [],
    )
    context = ProviderContext(
        name="polar",
        settings=settings,
        http=HttpClientFactory(fake.transport(), sleep=sleep, backoff=0.01),
        logger=logging.getLogger("billing_gql.provider.polar"),
    )
    provider = PolarProvider(context)
    try:
        yield provider
    finally:
        await provider.aclose()
