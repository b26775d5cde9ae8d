"""Redirect URLs (successUrl, cancelUrl, returnUrl) go only to the operator's origins
(BILLING_GQL_REDIRECT_ORIGINS); without any, an admin key may send https URLs and a customer
token none (security issue #11, open redirects)."""

from __future__ import annotations

from typing import Any

import pytest
from billing_helpers import (
    CREATE_CHECKOUT,
    PORTAL,
    make_customer,
    make_plan,
    session_for,
)

from billing_gql.settings import BillingSettings, OutboundSettings, Settings, SettingsError
from billing_gql.testing import ApiClient
from billing_gql.testing.fixtures import MakeApi

ORIGINS = OutboundSettings(redirect_origins=("https://app.example.com", "http://localhost:3000"))
MANUAL = BillingSettings(manual_provider=True)


async def checkout_errors(
    api: ApiClient, customer: str, token: str | None, **urls: str
) -> list[tuple[list[str], str]]:
    result = await api.gql(
        CREATE_CHECKOUT,
        {"input": {"customerId": customer, "planCode": "pro", "provider": "manual", **urls}},
        admin=token is None,
        token=token,
    )
    assert not result.errors, result.body
    payload: dict[str, Any] = result.data["createCheckout"]
    return [(e["field"], e["code"]) for e in payload["userErrors"]]


async def portal_errors(api: ApiClient, customer: str, token: str | None, url: str) -> list[Any]:
    result = await api.gql(PORTAL, {"id": customer, "url": url}, admin=token is None, token=token)
    assert not result.errors, result.body
    return [(e["field"], e["code"]) for e in result.data["createPortalSession"]["userErrors"]]


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/phish",
        "https://app.example.com.evil.example/",  # a suffix is not the origin
        "https://app.example.com:8443/done",  # another port
        "http://app.example.com/done",  # another scheme
        "https://localhost:3000/done",
        "https://evil.example/?next=https://app.example.com/",
    ],
)
async def test_only_configured_origins_are_accepted(make_api: MakeApi, url: str) -> None:
    async with make_api(billing=MANUAL, outbound=ORIGINS) as api:
        await make_plan(api)
        customer = await make_customer(api)
        token = await session_for(api, customer)
        for who in (token, None):  # a customer token, and the admin key alike
            assert await checkout_errors(api, customer, who, successUrl=url) == [
                (["input", "successUrl"], "REDIRECT_NOT_ALLOWED")
            ]
            assert await checkout_errors(api, customer, who, cancelUrl=url) == [
                (["input", "cancelUrl"], "REDIRECT_NOT_ALLOWED")
            ]
            assert await portal_errors(api, customer, who, url) == [
                (["returnUrl"], "REDIRECT_NOT_ALLOWED")
            ]


async def test_configured_origins_pass_for_customers(make_api: MakeApi) -> None:
    async with make_api(billing=MANUAL, outbound=ORIGINS) as api:
        await make_plan(api)
        customer = await make_customer(api)
        token = await session_for(api, customer)
        assert (
            await checkout_errors(
                api,
                customer,
                token,
                successUrl="https://APP.example.com:443/done?c={CHECKOUT_ID}",
                cancelUrl="http://localhost:3000/pricing",
            )
            == []
        )
        # Past the URL check: the customer has no subscription to manage yet.
        assert await portal_errors(api, customer, token, "https://app.example.com/account") == [
            (None, "NOT_SUPPORTED")
        ]


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com@evil.example/",  # credentials: the host is evil.example
        "https://app.example.com\\@evil.example/",
        "javascript:alert(1)",
        "//evil.example/",
    ],
)
async def test_malformed_redirects_are_invalid(make_api: MakeApi, url: str) -> None:
    async with make_api(billing=MANUAL, outbound=ORIGINS) as api:
        await make_plan(api)
        customer = await make_customer(api)
        token = await session_for(api, customer)
        assert await checkout_errors(api, customer, token, successUrl=url) == [
            (["input", "successUrl"], "INVALID_INPUT")
        ]
        assert await portal_errors(api, customer, token, url) == [(["returnUrl"], "INVALID_INPUT")]


async def test_without_origins_only_admins_send_https_urls(make_api: MakeApi) -> None:
    async with make_api(billing=MANUAL) as api:
        await make_plan(api)
        customer = await make_customer(api)
        token = await session_for(api, customer)
        url = "https://app.example.com/done"
        assert await checkout_errors(api, customer, token, successUrl=url) == [
            (["input", "successUrl"], "REDIRECT_NOT_ALLOWED")
        ]
        assert await portal_errors(api, customer, token, url) == [
            (["returnUrl"], "REDIRECT_NOT_ALLOWED")
        ]
        assert await checkout_errors(api, customer, None, successUrl="http://app.example.com/") == [
            (["input", "successUrl"], "REDIRECT_NOT_ALLOWED")
        ]
        assert await checkout_errors(api, customer, None, successUrl=url, cancelUrl=url) == []
        # Without URLs a customer still buys.
        assert await checkout_errors(api, customer, token) == []


def test_origins_setting_is_parsed_and_checked() -> None:
    env = {"BILLING_GQL_REDIRECT_ORIGINS": "https://App.Example.com:443/, http://localhost:3000"}
    assert Settings.from_env(env).outbound.redirect_origins == (
        "https://app.example.com",
        "http://localhost:3000",
    )
    assert Settings.from_env({}).outbound == OutboundSettings()
    for bad in ("https://app.example.com/path", "app.example.com", "ftp://x.example"):
        with pytest.raises(SettingsError, match="BILLING_GQL_REDIRECT_ORIGINS"):
            Settings.from_env({"BILLING_GQL_REDIRECT_ORIGINS": bad})
