"""Fixtures of the SePay plugin's tests: a fake SePay and the app wired to it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

import billing_gql_sepay.plugin
from billing_gql import HttpClientFactory, ProviderContext, ProviderSettings
from billing_gql.settings import BillingSettings, Route
from billing_gql.testing import ApiClient
from billing_gql_sepay.plugin import SePayProvider
from billing_gql_sepay.testing import FakeSePay

ROUTES = (Route("VN", "sepay"), Route("*", "manual"))
"""``BILLING_GQL_ROUTES=VN=sepay,*=manual``."""


@pytest.fixture
def fake() -> FakeSePay:
    return FakeSePay()


@pytest.fixture
def billing() -> BillingSettings:
    return BillingSettings(manual_provider=True, routes=ROUTES)


@pytest.fixture
async def api(make_api: Any, fake: FakeSePay, billing: BillingSettings) -> AsyncIterator[ApiClient]:
    """The app with the SePay plugin (and the manual provider), against the fake."""
    async with make_api(
        plugins=[billing_gql_sepay.plugin],
        env=fake.env(),
        transports={"sepay": fake.transport()},
        billing=billing,
    ) as client:
        yield client


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the SePay API client took between attempts (recorded, not slept)."""
    return []


def provider_for(fake: FakeSePay, sleeps: list[float], **settings: str) -> SePayProvider:
    """A SePay provider on the fake's transport, outside any app."""
    env = fake.env(**settings)
    values = {k.removeprefix("BILLING_GQL_SEPAY_"): v for k, v in env.items()}
    defaults = {k: v for k, v in SePayProvider.optional_settings.items() if v is not None}
    context = ProviderContext(
        name="sepay",
        settings=ProviderSettings("sepay", {**defaults, **values}, []),
        http=HttpClientFactory(fake.transport()),
        logger=logging.getLogger("billing_gql.provider.sepay"),
    )
    provider = SePayProvider(context)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    if provider.api is not None:
        provider.api.sleep = sleep
    return provider


@pytest.fixture
async def sepay(fake: FakeSePay, sleeps: list[float]) -> AsyncIterator[SePayProvider]:
    provider = provider_for(fake, sleeps)
    try:
        yield provider
    finally:
        await provider.aclose()
