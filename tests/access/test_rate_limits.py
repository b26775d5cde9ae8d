"""Rate limits: per key, per session token and per client address on /graphql, per provider on
webhook routes, counted in PostgreSQL so that every server process shares them."""

from __future__ import annotations

from dataclasses import replace

import pytest
from access_helpers import make_key
from billing_helpers import db_rows, make_customer, session_for
from fakes import FAKE_ENV, FakePlugin

from billing_gql.settings import (
    DEFAULT_RATE_LIMIT,
    BillingSettings,
    LimitSettings,
    RateLimit,
    Settings,
    SettingsError,
)
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import ADMIN_KEY, MakeApi

DAY = 86400  # a window no test run crosses (counts reset at a window's start)
METERS = "{ meters { code } }"
ENTITLEMENT = '{ entitlement(externalCustomerId: "usr_1", feature: "seats") { enabled } }'


def test_the_settings() -> None:
    assert Settings.from_env({}).limits == LimitSettings()
    limits = Settings.from_env(
        {
            "BILLING_GQL_RATE_LIMIT": "600/minute",
            "BILLING_GQL_WEBHOOK_RATE_LIMIT": "10/s",
            "BILLING_GQL_RATE_LIMIT_ENTITLEMENTS": "1",
        }
    ).limits
    assert limits.graphql == RateLimit(600, 60) and str(limits.graphql) == "600/minute"
    assert limits.webhooks == RateLimit(10, 1) and limits.limit_entitlements
    assert Settings.from_env({"BILLING_GQL_RATE_LIMIT": "5000/hours"}).limits.graphql == RateLimit(
        5000, 3600
    )
    for bad in ("600", "0/minute", "x/minute", "10/week", "-1/s"):
        with pytest.raises(SettingsError, match="BILLING_GQL_RATE_LIMIT"):
            Settings.from_env({"BILLING_GQL_RATE_LIMIT": bad})
    # Unset: keys unlimited, tokens and addresses the generous default; "off": nothing.
    assert LimitSettings().for_principal(is_key=True) is None
    assert LimitSettings().for_principal(is_key=False) == DEFAULT_RATE_LIMIT
    off = Settings.from_env({"BILLING_GQL_RATE_LIMIT": "off"}).limits
    assert off.for_principal(is_key=False) is None
    limited = LimitSettings(graphql=RateLimit(3, 60))
    assert (
        limited.for_principal(is_key=True)
        == limited.for_principal(is_key=False)
        == RateLimit(3, 60)
    )


def _limited(settings: Settings, **limits: object) -> Settings:
    return replace(
        settings,
        limits=LimitSettings(**limits),  # type: ignore[arg-type]
        billing=BillingSettings(manual_provider=True),
    )


async def _expect_limited(api: ApiClient, query: str, token: str | None) -> None:
    response = await api.gql(query, token=token)
    assert response.status == 429, response.body
    retry = int(response.headers["retry-after"])
    assert 1 <= retry <= DAY
    assert response.body == {
        "errors": [
            {
                "message": f"rate limit exceeded: retry in {retry} s",
                "extensions": {"code": "RATE_LIMITED", "retryAfter": retry},
            }
        ]
    }
    assert response.headers["content-type"].startswith("application/graphql-response+json")


async def test_a_limit_is_shared_by_every_server_process(
    make_api: MakeApi, app_settings: Settings, clean_database: TestDatabase
) -> None:
    settings = _limited(app_settings, graphql=RateLimit(3, DAY))
    async with make_api(settings=settings) as one, make_api(settings=settings) as two:
        # The bootstrap admin key's 3 requests.
        _, key = await make_key(one, "ADMIN")
        token = await session_for(one, await make_customer(one, "usr_1"))
        await _expect_limited(two, METERS, ADMIN_KEY)
        # The key: 3 requests across both processes, then refused in either.
        for api in (one, two, one):
            assert (await api.gql(METERS, token=key)).ok() == {"meters": []}
        await _expect_limited(two, METERS, key)
        await _expect_limited(one, METERS, key)
        # The entitlement check is never counted (unless asked, below).
        for _ in range(5):
            assert (await two.gql(ENTITLEMENT, token=key)).ok()
        # Anonymous callers count by client address, session tokens each on their own.
        for api in (two, one, two):
            assert (await api.gql("{ plans { code } }")).ok() == {"plans": []}
        await _expect_limited(one, "{ plans { code } }", None)
        for api in (one, two, two):
            assert (await api.gql("{ viewer { externalId } }", token=token)).ok()
        await _expect_limited(one, "{ viewer { externalId } }", token)
    buckets = await db_rows(
        clean_database.url, "SELECT bucket, hits FROM rate_limit_counters ORDER BY bucket"
    )
    kinds = sorted(b["bucket"].split(":")[0] for b in buckets)
    assert kinds == ["addr", "admin", "key", "session"]


async def test_entitlement_checks_count_when_asked(
    make_api: MakeApi, app_settings: Settings
) -> None:
    settings = _limited(app_settings, graphql=RateLimit(2, DAY), limit_entitlements=True)
    async with make_api(settings=settings) as api:
        _, key = await make_key(api, "ENTITLEMENTS_READ")
        for _ in range(2):
            assert (await api.gql(ENTITLEMENT, token=key)).ok()
        await _expect_limited(api, ENTITLEMENT, key)


async def test_keys_are_unlimited_by_default(api: ApiClient, clean_database: TestDatabase) -> None:
    _, key = await make_key(api, "READ")
    for _ in range(3):
        assert (await api.gql(METERS, token=key)).ok()
    assert await db_rows(clean_database.url, "SELECT bucket FROM rate_limit_counters") == []
    await api.gql("{ plans { code } }")  # anonymous: the default limit counts it
    [row] = await db_rows(clean_database.url, "SELECT bucket, hits FROM rate_limit_counters")
    assert row["bucket"].startswith("addr:") and row["hits"] == 1


async def test_webhook_routes_are_limited_per_provider(
    make_api: MakeApi, app_settings: Settings
) -> None:
    settings = _limited(app_settings, webhooks=RateLimit(2, DAY))
    async with (
        make_api(settings=settings, plugins=[FakePlugin()], env=FAKE_ENV) as one,
        make_api(settings=settings, plugins=[FakePlugin()], env=FAKE_ENV) as two,
    ):
        statuses = []
        for api in (one, two, one):
            response = await api.post_webhook(
                "fakepay", b"{}", {"content-type": "application/json"}
            )
            statuses.append(response.status_code)
        assert statuses == [401, 401, 429]
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["errors"][0]["extensions"] == {"code": "RATE_LIMITED"}
        # Another provider has its own count.
        other = await two.post_webhook("fakebank", b"{}", {"content-type": "application/json"})
        assert other.status_code != 429
