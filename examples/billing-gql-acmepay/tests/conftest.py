"""Fixtures of the AcmePay plugin's tests: a fake AcmePay and a provider wired to it.

The test kit itself is enabled by ``-p billing_gql.testing`` in this package's
``pyproject.toml`` (from billing-gql's repository root, by the root ``conftest.py``): only a
top-level conftest may declare ``pytest_plugins``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from billing_gql.testing import provider_for
from billing_gql_acmepay.plugin import AcmePayProvider
from billing_gql_acmepay.testing import FakeAcmePay


@pytest.fixture
def fake() -> FakeAcmePay:
    return FakeAcmePay()


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the HTTP client took between retries (recorded, not slept)."""
    return []


@pytest.fixture
async def acmepay(fake: FakeAcmePay, sleeps: list[float]) -> AsyncIterator[AcmePayProvider]:
    """The provider as billing-gql builds it, its HTTP client on the fake's transport."""
    provider = provider_for(
        AcmePayProvider,
        fake.transport(),
        {"API_KEY": fake.api_key, "WEBHOOK_SECRET": fake.webhook_secret, "API_BASE": fake.api_base},
        sleeps=sleeps,
    )
    try:
        yield provider
    finally:
        await provider.aclose()
