"""Fixtures of the Stripe plugin's tests: a fake Stripe and a provider wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from billing_gql.testing import provider_for
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
    provider = provider_for(
        StripeProvider,
        fake.transport(),
        {
            "API_KEY": fake.api_key,
            "WEBHOOK_SECRET": fake.webhook_secret,
            "API_BASE": "https://api.stripe.test",
        },
        sleeps=sleeps,
    )
    try:
        yield provider
    finally:
        await provider.aclose()
