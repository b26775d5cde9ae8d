"""Relay connections (graphql/pages.py): newest first, ``first`` at most 100, opaque cursors,
and INVALID_INPUT for a negative ``first`` or a cursor we did not issue."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from billing_helpers import db_rows, make_plan

from billing_gql.testing import ApiClient, TestDatabase

PAGE = """query($first: Int, $after: String) { subscriptions(first: $first, after: $after) {
  edges { cursor node { customer { externalId } } }
  pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""


async def _subscriptions(api: ApiClient, database: TestDatabase, count: int) -> None:
    """``count`` customers c1…cN, each with one subscription created a second after the last."""
    plan = await make_plan(api)
    await db_rows(
        database.url,
        "WITH c AS (INSERT INTO customers (external_id, created_at, updated_at) "
        "SELECT 'c' || g, $1, $1 FROM generate_series(1, $3::int) g RETURNING id, external_id) "
        "INSERT INTO subscriptions (customer_id, plan_id, provider, status, currency, "
        "quantity, created_at, updated_at) "
        "SELECT c.id, $2::uuid, 'manual', 'ACTIVE', 'USD', 1, "
        "$1 + substr(c.external_id, 2)::int * interval '1 second', $1 FROM c",
        datetime(2027, 1, 1, tzinfo=UTC),
        plan["id"],
        count,
    )


async def test_pages_run_newest_first_and_first_is_clamped_to_100(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    await _subscriptions(api, clean_database, 103)
    first = (await api.gql(PAGE, {"first": 1000}, admin=True)).ok()["subscriptions"]
    assert len(first["edges"]) == 100
    names = [e["node"]["customer"]["externalId"] for e in first["edges"]]
    assert names == [f"c{i}" for i in range(103, 3, -1)]
    assert first["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": first["edges"][0]["cursor"],
        "endCursor": first["edges"][-1]["cursor"],
    }
    after = {"after": first["pageInfo"]["endCursor"]}
    rest = (await api.gql(PAGE, after, admin=True)).ok()["subscriptions"]
    assert [e["node"]["customer"]["externalId"] for e in rest["edges"]] == ["c3", "c2", "c1"]
    assert rest["pageInfo"]["hasNextPage"] is False
    assert rest["pageInfo"]["hasPreviousPage"] is True

    # Left out, first is 50; zero is an empty page that still says what follows.
    assert len((await api.gql(PAGE, admin=True)).ok()["subscriptions"]["edges"]) == 50
    empty = (await api.gql(PAGE, {"first": 0}, admin=True)).ok()["subscriptions"]
    assert empty["edges"] == []
    assert empty["pageInfo"]["hasNextPage"] is True


async def test_a_negative_first_or_a_foreign_cursor_is_invalid_input(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    await _subscriptions(api, clean_database, 2)

    def cursor(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    for variables in (
        {"first": -1},
        {"after": "not a cursor"},
        {"after": cursor(["2027-01-01T00:00:00+00:00", "not-a-uuid"])},
        {"after": cursor(["yesterday", "4f8a1c7e-0000-4000-8000-000000000000"])},
        {"after": cursor({"at": 1})},
        {"after": cursor(7)},
    ):
        result = await api.gql(PAGE, variables, admin=True)
        assert result.error_codes == ["INVALID_INPUT"], (variables, result.body)
        assert result.data is None
