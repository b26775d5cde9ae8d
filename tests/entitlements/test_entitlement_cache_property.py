"""Property: over random sequences of changes — a provider grant given or revoked, a plan
subscribed or cancelled, usage recorded (past a metered limit), the test clock advanced (its
sweeps ending periods) — an app answering from its entitlement cache gives exactly what an app
without one gives, after each change has been notified."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from billing_helpers import (
    CANCEL,
    ENTITLEMENT,
    ENTITLEMENTS,
    Rows,
    advance,
    complete,
    create_checkout,
    make_customer,
    make_plan,
    meter,
    record,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_gql.entitlements.checks import cache_of, listener_of
from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import ApiClient
from billing_gql.testing.fixtures import MakeApi

NOW = datetime(2027, 1, 1, tzinfo=UTC)
FEATURES = ("seats", "api_calls", "sso", "export")
CUSTOMERS = 2
MARKERS = itertools.count(1 << 40)

Op = tuple[str, int, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.integers(0, CUSTOMERS - 1), st.integers(0, 20)),
        st.tuples(st.just("revoke"), st.integers(0, CUSTOMERS - 1), st.just(0)),
        st.tuples(st.just("subscribe"), st.integers(0, CUSTOMERS - 1), st.integers(0, 1)),
        st.tuples(st.just("cancel"), st.integers(0, CUSTOMERS - 1), st.integers(0, 1)),
        st.tuples(st.just("usage"), st.integers(0, CUSTOMERS - 1), st.integers(1, 8)),
        st.tuples(st.just("advance"), st.just(0), st.integers(1, 40)),
    ),
    min_size=1,
    max_size=8,
)


class World:
    """Both apps, and what the operations need to know between them."""

    def __init__(self, cached: ApiClient, plain: ApiClient, rows: Rows) -> None:
        self.cached = cached
        self.plain = plain
        self.rows = rows
        self.runtime = cached.http.app.state.runtime  # type: ignore[attr-defined]

    async def notified(self) -> None:
        """Every change so far has reached the cached app's listener: a marker sent now
        arrives after them (the app runs in the test client's own event loop, so the marker
        goes through a connection of ours and the listener's ``synced`` is watched)."""
        listener = listener_of(self.runtime)
        assert listener is not None
        marker = next(MARKERS)
        await self.rows.execute(
            "SELECT pg_notify('billing_gql_entitlements', $1)", f"sync:{marker}"
        )
        deadline = time.monotonic() + 30
        while listener.synced < marker:
            assert time.monotonic() < deadline, "the marker never reached the listener"
            await asyncio.sleep(0.002)

    async def now(self) -> datetime:
        found = await self.rows.execute("SELECT now FROM clock_state WHERE id = 1")
        value: datetime = found[0]["now"]
        return value


@asynccontextmanager
async def opened(make_api: MakeApi, app_settings: Settings, rows: Rows) -> AsyncIterator[World]:
    """Both apps on the test clock (set to NOW), with the catalog made once."""
    await rows.set_clock(NOW)
    billing = BillingSettings(manual_provider=True, test_clock=True)
    cached_settings = replace(app_settings, billing=billing)
    plain_settings = replace(app_settings, billing=replace(billing, entitlement_cache_size=0))
    async with (
        make_api(settings=cached_settings) as cached,
        make_api(settings=plain_settings) as plain,
    ):
        if not await rows.execute("SELECT 1 FROM meters WHERE code = 'api_calls'"):
            await meter(cached, "api_calls")
            for code, seats in (("basic", "3"), ("team", "10")):
                await make_plan(
                    cached,
                    code,
                    features=[
                        {"feature": "seats", "limit": seats},
                        {"feature": "api_calls", "limit": "10"},
                        {"feature": "sso"},
                    ],
                )
        yield World(cached, plain, rows)


async def apply(world: World, customers: list[str], op: Op) -> None:
    kind, who, n = op
    customer = customers[who]
    if kind == "grant":
        grant = uuid.uuid4()
        await world.rows.execute(
            "INSERT INTO provider_grants (id, provider, grant_id, customer_id, benefit_id, "
            "benefit_type, granted, created_at, updated_at) "
            "VALUES ($1, 'polar', $2, $3, 'b', 'custom', true, now(), now())",
            grant,
            str(grant),
            uuid.UUID(customer),
        )
        await world.rows.execute(
            "INSERT INTO provider_grant_features (id, grant_id, customer_id, feature, enabled, "
            "limit_value) VALUES ($1, $2, $3, $4, true, $5)",
            uuid.uuid4(),
            grant,
            uuid.UUID(customer),
            FEATURES[n % len(FEATURES)],
            None if n % 5 == 0 else n,
        )
    elif kind == "revoke":
        await world.rows.execute(
            "DELETE FROM provider_grant_features WHERE id = (SELECT id FROM "
            "provider_grant_features WHERE customer_id = $1 LIMIT 1)",
            uuid.UUID(customer),
        )
    elif kind == "subscribe":
        payload = await create_checkout(
            world.cached,
            customerId=customer,
            planCode=("basic", "team")[n],
            provider="manual",
        )
        # A second live subscription to the same plan is refused (one live subscription per
        # customer and plan); the attempt changes nothing, which the comparison still checks.
        codes = [error["code"] for error in payload["userErrors"]]
        assert codes in ([], ["ALREADY_SUBSCRIBED"]), payload
        if not codes:
            await complete(world.cached, payload["checkout"]["id"])
    elif kind == "cancel":
        live = await world.rows.execute(
            "SELECT id FROM subscriptions WHERE customer_id = $1 "
            "AND status IN ('TRIALING', 'ACTIVE', 'PAST_DUE') ORDER BY created_at",
            uuid.UUID(customer),
        )
        if live:
            sub = str(live[min(n, len(live) - 1)]["id"])
            data = await world.cached.admin(
                CANCEL, {"input": {"subscriptionId": sub, "atPeriodEnd": False}}
            )
            assert data["cancelSubscription"]["userErrors"] == []
    elif kind == "usage":
        ts = (await world.now()).isoformat()
        await record(
            world.cached,
            [
                {
                    "id": str(uuid.uuid4()),
                    "customerId": customer,
                    "meter": "api_calls",
                    "timestamp": ts,
                }
                for _ in range(n)
            ],
        )
    else:
        await advance(world.cached, (await world.now()) + timedelta(days=n))


async def answers(api: ApiClient, customer: str) -> list[Any]:
    out: list[Any] = []
    for feature in FEATURES:
        data = await api.admin(ENTITLEMENT, {"c": customer, "f": feature})
        out.append(data["entitlement"])
    data = await api.admin(ENTITLEMENTS, {"c": customer})
    out.append(data["entitlements"])
    return out


async def scenario(world: World, sequence: list[Op]) -> None:
    tag = uuid.uuid4().hex[:8]
    customers = [await make_customer(world.cached, f"{tag}-{i}") for i in range(CUSTOMERS)]
    cache = cache_of(world.runtime)
    assert cache is not None
    for op in sequence:
        await apply(world, customers, op)
        await world.notified()
        for customer in customers:
            expected = await answers(world.plain, customer)
            assert await answers(world.cached, customer) == expected, op
            hits = cache.stats.hits
            assert await answers(world.cached, customer) == expected, op  # from memory
            assert cache.stats.hits > hits


@settings(
    max_examples=10,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=ops)
def test_cached_answers_equal_the_databases(
    make_api: MakeApi, app_settings: Settings, rows: Rows, sequence: list[Op]
) -> None:
    """Each example runs in its own event loop (the apps are made in it)."""

    async def run() -> None:
        async with opened(make_api, app_settings, rows) as world:
            await scenario(world, sequence)

    asyncio.run(run())
