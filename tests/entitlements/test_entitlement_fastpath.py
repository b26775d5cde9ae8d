"""The entitlement fast path answers exactly what full GraphQL execution answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from billing_helpers import Rows, make_customer, make_plan, meter, record, session_for, subscribe

from billing_gql.graphql.context import Context
from billing_gql.graphql.http import DocumentCache
from billing_gql.graphql.principals import resolve_viewer
from billing_gql.settings import BillingSettings, GraphQLSettings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import MakeApi

NOW = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)

FAST = """query($c: ID, $e: String, $f: String!) {
  e: entitlement(customerId: $c, externalCustomerId: $e, feature: $f) {
    __typename feature on: enabled limit used left: remaining } }"""
# The same with a directive: the fast path declines it, so graphql-core executes it.
SLOW = FAST.replace("feature on:", "feature @include(if: true) on:")
LITERAL = 'query { entitlement(externalCustomerId: "acme", feature: "sso") { enabled limit } }'


@pytest.fixture
async def api(make_api: MakeApi, clean_database: TestDatabase) -> AsyncIterator[ApiClient]:
    await Rows(clean_database).set_clock(NOW)
    async with make_api(billing=BillingSettings(test_clock=True, manual_provider=True)) as c:
        yield c


def test_detector_takes_plain_documents_only() -> None:
    cache = DocumentCache(GraphQLSettings())
    assert cache.prepare(FAST).fast is not None
    assert cache.prepare(LITERAL).fast is not None
    assert cache.prepare(SLOW).fast is None
    assert cache.prepare('{ entitlement(customerId: 1, feature: "x") { enabled } }').fast is None
    assert (
        cache.prepare(
            '{ a: entitlement(externalCustomerId: "a", feature: "x") { enabled } '
            "b: plans { code } }"
        ).fast
        is None
    )
    assert (
        cache.prepare(
            'query($f: String = "x") { entitlement(externalCustomerId: "a", '
            "feature: $f) { enabled } }"
        ).fast
        is None
    )


async def test_fast_and_full_execution_agree(api: ApiClient) -> None:
    await meter(api, "api_calls")
    await make_plan(
        api,
        "pro",
        features=[
            {"feature": "api_calls", "limit": "10"},
            {"feature": "seats", "limit": "2.50"},
            {"feature": "sso"},
            {"feature": "beta", "enabled": False},
        ],
    )
    acme = await make_customer(api, "acme")
    other = await make_customer(api, "other")
    await subscribe(api, acme, "pro", currency="USD")
    await record(api, [{"id": f"u{i}", "customerId": acme, "meter": "api_calls"} for i in range(4)])
    acme_token = await session_for(api, acme)

    cases: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for feature in ("api_calls", "seats", "sso", "beta", "unknown"):
        cases.append(({"admin": True}, {"c": acme, "f": feature}))
        cases.append(({"admin": True}, {"e": "acme", "f": feature}))
        cases.append(({"token": acme_token}, {"e": "acme", "f": feature}))
    cases += [
        ({"admin": True}, {"e": "nobody", "f": "sso"}),
        ({"admin": True}, {"c": "not-a-uuid", "f": "sso"}),
        ({"admin": True}, {"c": other, "f": "sso"}),
        # Errors: the fast path declines, so both are graphql-core's own answers.
        ({"token": acme_token}, {"c": other, "f": "sso"}),
        ({"token": acme_token}, {"e": "other", "f": "sso"}),
        ({}, {"e": "acme", "f": "sso"}),
        ({"token": "bgcs_unknown"}, {"e": "acme", "f": "sso"}),
        ({"admin": True}, {"f": "sso"}),
        ({"admin": True}, {"c": acme, "e": "acme", "f": "sso"}),
        ({"admin": True}, {"e": 42, "f": "sso"}),
        ({"admin": True}, {"e": "acme"}),
    ]
    # Equal answers alone would also pass if the fast path declined everything: ask its
    # responder directly too. It must answer every success itself and decline every error.
    fast_path = DocumentCache(GraphQLSettings()).prepare(FAST).fast
    assert fast_path is not None and fast_path.respond is not None
    respond = fast_path.respond
    runtime = api.http.app.state.runtime  # type: ignore[attr-defined]

    async def responder_answer(bearer: str | None, variables: dict[str, Any]) -> Any:
        viewer = await resolve_viewer(runtime, f"Bearer {bearer}" if bearer else None)
        return await respond(Context(runtime=runtime, viewer=viewer), variables)

    for who, variables in cases:
        fast = await api.gql(FAST, variables, **who)
        slow = await api.gql(SLOW, variables, **who)
        assert (fast.status, fast.body) == (slow.status, slow.body), (who, variables)
        bearer = api.admin_key if who.get("admin") else who.get("token")
        # The runtime's pool belongs to the app's event loop, which the test client runs in
        # another thread: run the responder there.
        answered = await asyncio.to_thread(
            api.http.blocking_portal.call, responder_answer, bearer, variables
        )
        assert answered == (None if fast.errors else fast.data), (who, variables)

    answer = (await api.gql(FAST, {"e": "acme", "f": "api_calls"}, admin=True)).ok()
    assert answer == {
        "e": {
            "__typename": "Entitlement",
            "feature": "api_calls",
            "on": True,
            "limit": "10",
            "used": "4",
            "left": "6",
        }
    }
    assert (await api.gql(LITERAL, admin=True)).ok() == {
        "entitlement": {"enabled": True, "limit": None}
    }
