"""Security issue #11, items 3 and 4: the parsed-document cache is bounded by memory and keeps
no failures; an operation's cost (a node-count estimate) is limited before it executes, and
``Customer.subscriptions`` (the list that led back to itself) is capped."""

from __future__ import annotations

from dataclasses import replace

from billing_helpers import db_rows, make_customer, make_plan, session_for, subscribe

from billing_gql.graphql.http import DocumentCache
from billing_gql.settings import Settings
from billing_gql.testing import ApiClient
from billing_gql.testing.database import TestDatabase
from billing_gql.testing.fixtures import MakeApi

BUDGET = 1024 * 1024


async def test_the_document_cache_stays_within_its_bytes_and_keeps_no_failures(
    make_api: MakeApi, app_settings: Settings
) -> None:
    graphql = replace(app_settings.graphql, document_cache_bytes=BUDGET)
    async with make_api(settings=replace(app_settings, graphql=graphql)) as api:
        cache: DocumentCache = api.http.app.state.documents
        # Anonymous, distinct, valid documents with a long string literal (few tokens): the
        # cache keeps the newest within its budget, however many arrive.
        for i in range(150):
            query = f'{{ plan(code: "{i:04d}{"x" * 3000}") {{ code }} }}'
            result = await api.gql(query)
            assert result.status == 200 and result.body == {"data": {"plan": None}}
            assert cache.cached(query)
            assert cache.cached_bytes <= BUDGET
        assert 20 < len(cache) < 150
        kept = len(cache)
        # A document above 1/64 of the budget runs but is not kept.
        large = '{ plan(code: "' + "y" * 20_000 + '") { code } }'
        assert (await api.gql(large)).body == {"data": {"plan": None}}
        assert not cache.cached(large)
        # Documents that fail to parse or validate are never kept.
        failing = [
            '{ plan(code: "' + "z" * 3000 + '") { nope } }',
            '{ plan(code: "' + "z" * 3000 + '") { code }',
            "{ " + " ".join(f"a{i}: plans {{ code }}" for i in range(101)) + " }",
        ]
        for query in failing:
            result = await api.gql(query)
            assert result.status == 400
            assert not cache.cached(query)
        # A document over BILLING_GQL_MAX_QUERY_BYTES (128 KiB) is refused before parsing.
        huge = '{ plan(code: "' + "w" * 200_000 + '") { code } }'
        result = await api.gql(huge)
        assert result.status == 400 and result.error_codes == ["GRAPHQL_VALIDATION_FAILED"]
        assert "larger than 131072 bytes" in result.errors[0]["message"]
        assert not cache.cached(huge)
        assert len(cache) == kept and cache.cached_bytes <= BUDGET


NESTED = """query Deep { viewer { subscriptions { customer { subscriptions {
  customer { subscriptions { customer { subscriptions { customer { subscriptions { id }
} } } } } } } } } }"""


async def test_a_query_over_the_cost_limit_is_refused_before_it_runs(api: ApiClient) -> None:
    await make_plan(api)
    ann = await make_customer(api, "ann")
    await subscribe(api, ann)
    token = await session_for(api, ann)
    result = await api.gql(NESTED, token=token)
    assert result.status == 400 and "data" not in result.body
    assert result.error_codes == ["QUERY_TOO_COMPLEX"]
    error = result.errors[0]
    # 1 + 50 × (2 + 50 × (2 + 50 × (2 + 50 × (2 + 50 × 2))))
    assert error["extensions"]["cost"] == 637_755_101
    assert error["extensions"]["maxCost"] == 30_000
    assert "costs 637755101, more than the limit of 30000" in error["message"]
    # The same shape with small pages is cheap enough, and runs.
    small = NESTED.replace("subscriptions {", "subscriptions(first: 2) {")
    data = (await api.gql(small, token=token)).ok()
    assert data["viewer"]["subscriptions"][0]["customer"]["subscriptions"][0]["customer"]
    # A variable `first` counts as its maximum (100), whatever it is at run time.
    by_variable = (
        "query($n: Int) { viewer { subscriptions(first: $n) { customer { "
        "subscriptions(first: $n) { customer { subscriptions(first: $n) { id } } } } } } }"
    )
    result = await api.gql(by_variable, {"n": 1}, token=token)
    assert result.error_codes == ["QUERY_TOO_COMPLEX"]
    # Connections count their page for edges and nodes.
    page = "query { subscriptions(first: 100) { nodes { id } edges { cursor node { id } } } }"
    assert (await api.gql(page, admin=True)).ok()["subscriptions"]["nodes"]


async def test_the_cost_limit_is_configurable(make_api: MakeApi, app_settings: Settings) -> None:
    graphql = replace(app_settings.graphql, max_query_cost=20)
    async with make_api(settings=replace(app_settings, graphql=graphql)) as api:
        # 10 plans (a list without `first` counts 10) × (1 + code) = 20: at the limit.
        assert (await api.gql("{ plans { code } }")).ok() == {"plans": []}
        result = await api.gql("{ plans { code name } }")
        assert result.error_codes == ["QUERY_TOO_COMPLEX"]
        assert result.errors[0]["extensions"] == {
            "code": "QUERY_TOO_COMPLEX",
            "cost": 30,
            "maxCost": 20,
        }


async def test_customer_subscriptions_are_capped_by_first(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    await make_plan(api)
    ann = await make_customer(api, "ann")
    first = await subscribe(api, ann)
    db_url = clean_database.url
    # 120 more subscriptions, straight in the database.
    await db_rows(
        db_url,
        "INSERT INTO subscriptions (customer_id, plan_id, provider, status, currency, quantity, "
        "created_at, updated_at) SELECT customer_id, plan_id, provider, 'CANCELED', currency, "
        "quantity, created_at - g * interval '1 minute', updated_at "
        "FROM subscriptions, generate_series(1, 120) g",
    )
    token = await session_for(api, ann)
    query = "query($n: Int) { viewer { subscriptions(first: $n) { id } } }"
    default = (await api.gql("{ viewer { subscriptions { id } } }", token=token)).ok()
    assert len(default["viewer"]["subscriptions"]) == 50
    assert default["viewer"]["subscriptions"][0]["id"] == first["id"]  # newest first
    many = (await api.gql(query, {"n": 1000}, token=token)).ok()
    assert len(many["viewer"]["subscriptions"]) == 100
    few = (await api.gql(query, {"n": 3}, token=token)).ok()
    assert [s["id"] for s in few["viewer"]["subscriptions"]][:1] == [first["id"]]
    assert len(few["viewer"]["subscriptions"]) == 3
    negative = await api.gql(query, {"n": -1}, token=token)
    assert negative.error_codes == ["INVALID_INPUT"]
