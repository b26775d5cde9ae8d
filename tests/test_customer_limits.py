"""Security issue #11: what a customer may do and see — one trial and one live subscription per
plan, resuming an admin's pause, operator data and private plans."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from billing_helpers import (
    CANCEL,
    PAUSE,
    RESUME,
    make_customer,
    make_plan,
    session_for,
    set_clock,
    subscribe,
)
from fakes import FAKE_ENV, FakePlugin

from billing_gql.settings import BillingSettings
from billing_gql.testing import ApiClient

T0 = datetime(2027, 1, 31, 12, 0, 0, tzinfo=UTC)
BILLING = BillingSettings(manual_provider=True, test_clock=True)


@pytest.fixture
async def api(make_api, clean_database) -> AsyncIterator[ApiClient]:  # type: ignore[no-untyped-def]
    await set_clock(clean_database.url, T0)
    async with make_api(plugins=[FakePlugin()], env=FAKE_ENV, billing=BILLING) as client:
        yield client


# -- 5: a customer cannot undo an admin's pause ------------------------------------------------


async def test_a_customer_cannot_resume_a_pause_but_can_undo_its_own_cancel(
    api: ApiClient,
) -> None:
    await make_plan(api)
    cid = await make_customer(api)
    token = await session_for(api, cid)
    sub = await subscribe(api, cid)
    await api.admin(PAUSE, {"id": sub["id"]})
    refused = await api.gql(RESUME, {"id": sub["id"]}, token=token)
    assert refused.error_codes == ["FORBIDDEN"]
    assert refused.data is None
    shown = await api.admin(
        "query($id: ID!) { subscription(id: $id) { status } }", {"id": sub["id"]}
    )
    assert shown["subscription"]["status"] == "PAUSED"
    # The admin resumes it; the customer's own pending cancel is the customer's to undo.
    await api.admin(RESUME, {"id": sub["id"]})
    await api.gql(CANCEL, {"input": {"subscriptionId": sub["id"]}}, token=token)
    undone = await api.gql(RESUME, {"id": sub["id"]}, token=token)
    assert undone.errors == []
    resumed = undone.data["resumeSubscription"]["subscription"]
    assert resumed["status"] == "ACTIVE" and resumed["cancelAtPeriodEnd"] is False
