"""Fixtures shared by the core's tests (the kit's come from the root conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from billing_helpers import Rows

from billing_gql.settings import BillingSettings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import MakeApi


@pytest.fixture
def rows(clean_database: TestDatabase) -> Rows:
    return Rows(clean_database)


@pytest.fixture
async def clocked(
    make_api: MakeApi, rows: Rows, request: pytest.FixtureRequest
) -> AsyncIterator[ApiClient]:
    """An app on the test clock, frozen at the test module's ``NOW``."""
    await rows.set_clock(request.module.NOW)
    async with make_api(billing=BillingSettings(test_clock=True)) as client:
        yield client
