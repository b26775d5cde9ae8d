"""Fixtures of the Stripe plugin's tests: a fake Stripe and a provider wired to it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from billing_gql import HttpClientFactory, ProviderContext, ProviderSettings
from billing_gql_stripe.plugin import StripeProvider
from billing_gql_stripe.testing import FakeStripe


@pytest.fixture
def fake() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the HTTP client took between retries (recorded, not slept)."""
    return []


@pytest.fixture
async def stripe(fake: FakeStripe, sleeps: list[float]) -> AsyncIterator[StripeProvider]:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    settings = ProviderSettings(
        "stripe",
        {
            "API_KEY": fake.api_key,
            "WEBHOOK_SECRET": fake.webhook_secret,
            "API_BASE": "https://api.stripe.test",
        },
        [],
    )
    context = ProviderContext(
        name="stripe",
        settings=settings,
        http=HttpClientFactory(fake.transport(), sleep=sleep, backoff=0.01),
        logger=logging.getLogger("billing_gql.provider.stripe"),
    )
    provider = StripeProvider(context)
    try:
        yield provider
    finally:
        await provider.aclose()
