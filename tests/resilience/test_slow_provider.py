"""A slow provider never starves the database pool: ``createCheckout`` claims the provider
session in the checkout row, calls the provider with no transaction or connection held, and
writes the answer after (docs/architecture.md, "Data flow: a checkout")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from billing_helpers import create_checkout, entitlement, make_customer, make_plan
from fakes import FAKE_ENV, FakePayApi, FakePlugin
from served_app import served

from billing_gql.checkout import session as checkout_session
from billing_gql.settings import Settings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import MakeApi

POOL = 10
CHECKOUTS = 50
PROVIDER_DELAY = 10.0
REFS = [{"provider": "fakepay", "ref": "price_pro_usd", "currency": "USD"}]


class SlowPay:
    """The fake provider, answering a checkout after :data:`PROVIDER_DELAY` seconds, or as
    soon as the test releases it."""

    def __init__(self) -> None:
        self.api = FakePayApi()
        self.in_flight = 0
        self.answered = 0
        self.all_in = asyncio.Event()
        self.release = asyncio.Event()
        self.expected = CHECKOUTS

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/checkouts":
            self.in_flight += 1
            if self.in_flight >= self.expected:
                self.all_in.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), PROVIDER_DELAY)
            self.answered += 1
        return self.api.handle(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


@pytest.fixture
async def slow_api(
    make_api: MakeApi, app_settings: Settings
) -> AsyncIterator[tuple[ApiClient, SlowPay]]:
    """The app with the slow fake provider (Litestar's test client, one request at a time)."""
    slow = SlowPay()
    async with make_api(
        plugins=[FakePlugin()], env=FAKE_ENV, transports={"fakepay": slow.transport()}
    ) as api:
        yield api, slow


@pytest.fixture
async def served_slow_api(app_settings: Settings) -> AsyncIterator[tuple[ApiClient, SlowPay]]:
    """The app served on loopback with a pool of :data:`POOL` connections."""
    slow = SlowPay()
    settings = replace(
        app_settings,
        database=replace(app_settings.database, pool_max_size=POOL),
        plugins=replace(app_settings.plugins, env=FAKE_ENV),
    )
    try:
        async with served(
            settings, plugins=[FakePlugin()], transports={"fakepay": slow.transport()}
        ) as api:
            yield api, slow
    finally:
        slow.release.set()


async def _plan_and_customers(api: ApiClient, count: int) -> list[str]:
    await make_plan(
        api,
        providerRefs=REFS,
        features=[{"feature": "seats", "limit": "5"}],
    )
    return [await make_customer(api, f"usr_{i}") for i in range(count)]


async def test_fifty_checkouts_wait_on_a_slow_provider_while_entitlements_answer(
    served_slow_api: tuple[ApiClient, SlowPay],
) -> None:
    api, slow = served_slow_api
    customers = await _plan_and_customers(api, CHECKOUTS)
    tasks = [
        asyncio.create_task(
            create_checkout(
                api, customerId=c, planCode="pro", provider="fakepay", idempotencyKey="k"
            )
        )
        for c in customers
    ]
    # All fifty are at the provider at once, on a pool of ten: none of them holds a connection.
    try:
        await asyncio.wait_for(slow.all_in.wait(), PROVIDER_DELAY - 1)
    except TimeoutError:
        pytest.fail(f"only {slow.in_flight} of {CHECKOUTS} checkouts reached the provider")

    # A stream of entitlement checks (ten at a time) is answered while every call is pending.
    async def check(customer: str) -> dict[str, Any]:
        return await entitlement(api, customer, "seats")

    for start in range(0, 2 * CHECKOUTS, POOL):
        batch = [customers[i % CHECKOUTS] for i in range(start, start + POOL)]
        answers = await asyncio.gather(*(check(c) for c in batch))
        assert all(a["enabled"] is False for a in answers), answers
    assert slow.answered == 0, "the provider answered before the entitlement stream finished"

    slow.release.set()
    results = await asyncio.gather(*tasks)
    for result in results:
        assert result["userErrors"] == [], result
        assert result["checkout"]["status"] == "OPEN"
        assert result["checkout"]["url"].startswith("https://pay.fake/")
    assert slow.answered == CHECKOUTS
    # The same key again returns each checkout made, without asking the provider again.
    again = await create_checkout(
        api, customerId=customers[0], planCode="pro", provider="fakepay", idempotencyKey="k"
    )
    assert again["checkout"]["id"] == results[0]["checkout"]["id"]
    assert slow.answered == CHECKOUTS


async def _unprepare(db_url: str, checkout_id: str, claimed_ago: str) -> None:
    """The row a process leaves when it dies after claiming the session, before the answer."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "UPDATE checkouts SET prepared_at = NULL, url = NULL, provider_checkout_id = NULL, "
            "session_claim = gen_random_uuid(), session_claimed_at = now() - $2::text::interval "
            "WHERE id = $1",
            checkout_id,
            claimed_ago,
        )
    finally:
        await conn.close()


async def test_a_retry_resumes_a_claim_left_by_a_dead_process(
    slow_api: tuple[ApiClient, SlowPay], clean_database: TestDatabase
) -> None:
    api, slow = slow_api
    slow.release.set()
    [customer] = await _plan_and_customers(api, 1)
    args = {"customerId": customer, "planCode": "pro", "provider": "fakepay"}
    first = await create_checkout(api, idempotencyKey="crash", **args)
    checkout_id = first["checkout"]["id"]
    await _unprepare(clean_database.url, checkout_id, "1 hour")

    again = await create_checkout(api, idempotencyKey="crash", **args)
    assert again["userErrors"] == []
    assert again["checkout"]["id"] == checkout_id
    assert again["checkout"]["url"].startswith("https://pay.fake/")
    assert slow.answered == 2  # asked again, with the checkout's stable idempotency key
    keys = {request[2].get("idempotency_key") for request in slow.api.requests}
    assert keys == {f"billing-gql-checkout-{checkout_id}"}


async def test_a_live_claim_is_reported_as_in_progress(
    slow_api: tuple[ApiClient, SlowPay],
    clean_database: TestDatabase,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api, slow = slow_api
    slow.release.set()
    monkeypatch.setattr(checkout_session, "CLAIM_WAIT_SECONDS", 0.3)
    [customer] = await _plan_and_customers(api, 1)
    args = {"customerId": customer, "planCode": "pro", "provider": "fakepay"}
    first = await create_checkout(api, idempotencyKey="busy", **args)
    await _unprepare(clean_database.url, first["checkout"]["id"], "0 seconds")

    busy = await create_checkout(api, idempotencyKey="busy", **args)
    assert busy["checkout"] is None
    assert [e["code"] for e in busy["userErrors"]] == ["CHECKOUT_IN_PROGRESS"]
    assert slow.answered == 1
