"""No N+1: a page of subscriptions with their plans, customers and entitlements costs the same
number of SQL statements for 10 as for 100; the entitlement check and a provider delivery
cost what they must (counted with asyncpg's query loggers on every connection of the app's
pool)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from billing_helpers import StatementCounter, checkout_ok, db_rows, make_customer, make_plan
from fakes import FAKE_ENV, FakePayApi, FakePlugin, pay_event

from billing_gql.settings import BillingSettings, Settings

PAGE = """query($first: Int) { subscriptions(first: $first) { edges { node {
  id status currentPeriodEnd
  plan { code prices { amount } features { feature limit } }
  customer { externalId entitlements { feature enabled limit used remaining }
             subscriptions { id } }
  renewalCheckout { id }
} } pageInfo { hasNextPage } } }"""


async def test_a_page_of_subscriptions_costs_a_fixed_number_of_statements(
    make_api,
    app_settings: Settings,
    clean_database,  # type: ignore[no-untyped-def]
) -> None:
    # Every pool connection exists from the start, so every one gets the counter.
    settings = replace(
        app_settings,
        database=replace(app_settings.database, pool_min_size=5, pool_max_size=5),
        # The database's cost: without the entitlement cache (which would answer repeats).
        billing=BillingSettings(manual_provider=True, entitlement_cache_size=0),
    )
    async with make_api(settings=settings) as api:
        plans = [
            await make_plan(
                api,
                f"plan{i}",
                features=[{"feature": "seats", "limit": str(i + 1)}, {"feature": f"f{i}"}],
            )
            for i in range(3)
        ]
        now = datetime(2027, 1, 1, tzinfo=UTC)
        await db_rows(
            clean_database.url,
            "WITH c AS (INSERT INTO customers (external_id, created_at, updated_at) "
            "SELECT 'c' || g, $1, $1 FROM generate_series(1, 120) g RETURNING id, external_id) "
            "INSERT INTO subscriptions (customer_id, plan_id, provider, status, currency, "
            "quantity, current_period_start, current_period_end, created_at, updated_at) "
            "SELECT c.id, ($2::uuid[])[1 + (substr(c.external_id, 2)::int % 3)], 'manual', "
            "'ACTIVE', 'USD', 1, $1, $1 + interval '1 month', "
            "$1 + substr(c.external_id, 2)::int * interval '1 second', $1 FROM c",
            now,
            [p["id"] for p in plans],
        )
        pool = api.http.app.state.runtime.db.pool  # type: ignore[attr-defined]
        counter = StatementCounter()
        connections = [h._con for h in pool._holders if h._con is not None]
        assert len(connections) == 5
        for conn in connections:
            conn.add_query_logger(counter)
        counts = {}
        for size in (10, 100, 10):
            counter.take()
            data = await api.admin(PAGE, {"first": size})
            edges = data["subscriptions"]["edges"]
            assert len(edges) == size
            assert all(e["node"]["customer"]["entitlements"] for e in edges)
            counts[size] = len(counter.take())
        # subscriptions page, plans (5 statements for all their parts), customers, their
        # entitlements, their subscriptions, open renewal checkouts: 10 whatever the size.
        assert counts[10] == counts[100] == 10, counts


@pytest.mark.parametrize(("cache_size", "expected"), [(0, 1), (100, 0)])
async def test_the_entitlement_check_is_one_statement_or_none_from_the_cache(
    make_api,
    app_settings: Settings,
    clean_database,  # type: ignore[no-untyped-def]
    cache_size: int,
    expected: int,
) -> None:
    """One statement without the cache; a repeated check with it reads nothing."""
    settings = replace(
        app_settings,
        database=replace(app_settings.database, pool_min_size=5, pool_max_size=5),
        billing=BillingSettings(manual_provider=True, entitlement_cache_size=cache_size),
    )
    async with make_api(settings=settings) as api:
        plan = await make_plan(api, "p", features=[{"feature": "seats", "limit": "3"}])
        rows = await db_rows(
            clean_database.url,
            "WITH c AS (INSERT INTO customers (external_id, created_at, updated_at) "
            "VALUES ('ext', now(), now()) RETURNING id) INSERT INTO subscriptions (customer_id, "
            "plan_id, provider, status, currency, quantity, created_at, updated_at) "
            "SELECT c.id, $1::uuid, 'manual', 'ACTIVE', 'USD', 1, now(), now() FROM c "
            "RETURNING customer_id::text AS id",
            plan["id"],
        )
        pool = api.http.app.state.runtime.db.pool  # type: ignore[attr-defined]
        counter = StatementCounter()
        for conn in [h._con for h in pool._holders if h._con is not None]:
            conn.add_query_logger(counter)
        for selector in (f'customerId: "{rows[0]["id"]}"', 'externalCustomerId: "ext"'):
            query = f'{{ entitlement({selector}, feature: "seats") {{ enabled limit }} }}'
            await api.admin(query)  # warm the connection's caches
            counter.take()
            data = await api.admin(query)
            assert data["entitlement"] == {"enabled": True, "limit": "3"}
            statements = counter.take()
            assert len(statements) == expected, statements


async def test_a_provider_delivery_costs_what_it_changes(
    make_api,
    app_settings: Settings,
    clean_database,  # type: ignore[no-untyped-def]
) -> None:
    """The webhook hot path: a subscription update reads neither the stored delivery back nor
    a whole plan to learn its id."""
    fake = FakePayApi()
    settings = replace(
        app_settings,
        database=replace(app_settings.database, pool_min_size=5, pool_max_size=5),
        billing=BillingSettings(),
    )
    async with make_api(
        settings=settings,
        plugins=[FakePlugin()],
        env=FAKE_ENV,
        transports={"fakepay": fake.transport()},
    ) as api:
        await make_plan(api, "pro", providerRefs=[{"provider": "fakepay", "ref": "price_pro"}])
        customer = await make_customer(api)
        checkout = await checkout_ok(api, customerId=customer, planCode="pro", provider="fakepay")
        state = {
            "id": "fsub_1",
            "status": "ACTIVE",
            "plan_ref": "price_pro",
            "currency": "usd",
            "customer": "fcus_1",
            "checkout_id": checkout["id"],
        }
        pool = api.http.app.state.runtime.db.pool  # type: ignore[attr-defined]
        counter = StatementCounter()
        for conn in [h._con for h in pool._holders if h._con is not None]:
            conn.add_query_logger(counter)
        for at, status in (
            ("2027-01-31T12:05:00+00:00", "ACTIVE"),
            ("2027-02-01T00:00:00+00:00", "PAST_DUE"),
        ):
            body, headers = pay_event(
                "subscription.updated", at, subscription={**state, "status": status}
            )
            counter.take()
            response = await api.post_webhook("fakepay", body, headers)
            assert response.status_code == 200
            statements = counter.take()
        rows = await db_rows(clean_database.url, "SELECT status FROM subscriptions")
        assert rows == [{"status": "PAST_DUE"}]
    # Store, BEGIN, claim the delivery (marked applied), find the checkout and lock its
    # subscription (the lock order: docs/architecture.md), lock the checkout, the subscription
    # (already held), map the plan ref, update, learn the customer's id, COMMIT, the event's
    # outbox row.
    assert len(statements) == 11, statements


@pytest.mark.parametrize(("cache_size", "expected"), [(0, 2), (100, 1)])
async def test_a_scoped_keys_entitlement_check_reads_its_key_then_the_cache_or_the_lookup(
    make_api,
    app_settings: Settings,
    clean_database,  # type: ignore[no-untyped-def]
    cache_size: int,
    expected: int,
) -> None:
    """The key's row (read each time: revocation acts at once), then the lookup — or, with the
    entitlement cache, nothing more: the scope is checked, the answer comes from memory."""
    settings = replace(
        app_settings,
        database=replace(app_settings.database, pool_min_size=5, pool_max_size=5),
        billing=BillingSettings(manual_provider=True, entitlement_cache_size=cache_size),
    )
    async with make_api(settings=settings) as api:
        created = await api.admin(
            'mutation { createApiKey(input: {name: "b", scopes: [ENTITLEMENTS_READ]}) { secret } }'
        )
        key = created["createApiKey"]["secret"]
        plan = await make_plan(api, "p", features=[{"feature": "seats", "limit": "3"}])
        await db_rows(
            clean_database.url,
            "WITH c AS (INSERT INTO customers (external_id, created_at, updated_at) "
            "VALUES ('ext', now(), now()) RETURNING id) INSERT INTO subscriptions (customer_id, "
            "plan_id, provider, status, currency, quantity, created_at, updated_at) "
            "SELECT c.id, $1::uuid, 'manual', 'ACTIVE', 'USD', 1, now(), now() FROM c",
            plan["id"],
        )
        pool = api.http.app.state.runtime.db.pool  # type: ignore[attr-defined]
        counter = StatementCounter()
        for conn in [h._con for h in pool._holders if h._con is not None]:
            conn.add_query_logger(counter)
        query = '{ entitlement(externalCustomerId: "ext", feature: "seats") { enabled } }'
        assert (await api.gql(query, token=key)).ok()  # warm; notes lastUsedAt once
        counter.take()
        for _ in range(3):
            assert (await api.gql(query, token=key)).ok() == {"entitlement": {"enabled": True}}
            statements = counter.take()
            assert len(statements) == expected, statements
