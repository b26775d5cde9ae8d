"""Polar bills usage through the plan's product: a checkout of a plan with usage charges reads
the product and the meters of its metered prices, and goes ahead only when each charge's
meter is billed; otherwise ``PROVIDER_REF_MISSING`` names the charge, the checkout is FAILED
and Polar is not asked for one."""

from __future__ import annotations

import logging

import pytest
from openapi_core import OpenAPI
from polar_helpers import validate_calls
from polar_world import CREATE_PLAN, World, open_checkout

from billing_gql_polar.metered import counted_event_names

METER = """mutation($i: CreateMeterInput!) { createMeter(input: $i) {
  userErrors { field message code } } }"""


async def metered_plan(w: World, code: str, product: str, *, polar_event: str | None) -> None:
    refs = [{"provider": "polar", "ref": polar_event}] if polar_event else []
    await w.api.admin(
        METER,
        {"i": {"code": "api_calls", "name": "API", "aggregation": "COUNT", "providerRefs": refs}},
    )
    await w.api.admin(
        CREATE_PLAN,
        {
            "input": {
                "code": code,
                "name": code,
                "interval": "MONTH",
                "prices": [{"currency": "USD", "amount": "29.00"}],
                "providerRefs": [{"provider": "polar", "ref": product, "currency": "USD"}],
                "charges": [
                    {
                        "meter": "api_calls",
                        "model": "PER_UNIT",
                        "currency": "USD",
                        "unitAmount": "0.01",
                    }
                ],
            }
        },
    )


async def test_a_product_billing_the_meter_takes_the_checkout(
    world: World, openapi: OpenAPI
) -> None:
    meter = world.fake.create_meter(name="API calls", event_name="api.call")
    product = world.fake.create_product(
        name="Metered", prices={"usd": 2900}, metered=[("usd", meter, "1")]
    )
    await metered_plan(world, "metered", product, polar_event="api.call")
    payload = await open_checkout(world, "metered")
    assert payload["userErrors"] == [] and payload["checkout"]["status"] == "OPEN"
    assert [c.path for c in world.fake.calls] == [
        f"/v1/products/{product}",
        f"/v1/meters/{meter}",
        "/v1/checkouts/",
    ]
    assert validate_calls(openapi, world.fake.calls) == 3


async def test_a_product_without_a_metered_price_for_the_meter_is_refused(world: World) -> None:
    other = world.fake.create_meter(name="Tokens", event_name="tokens.used")
    product = world.fake.create_product(
        name="Metered", prices={"usd": 2900}, metered=[("usd", other, "1")]
    )
    await metered_plan(world, "metered", product, polar_event="api.call")
    payload = await open_checkout(world, "metered")
    # A refusal at the provider step: the checkout is FAILED with the code, nothing else.
    assert payload["checkout"]["status"] == "FAILED"
    [error] = payload["userErrors"]
    assert error["code"] == "PROVIDER_REF_MISSING" and error["field"] == ["input", "planCode"]
    assert "'api_calls'" in error["message"] and "'api.call'" in error["message"]
    assert world.fake.requests_to("POST", "/v1/checkouts/") == []
    assert world.fake.checkouts == {}


async def test_a_metered_price_in_another_currency_does_not_count(world: World) -> None:
    meter = world.fake.create_meter(name="API calls", event_name="api.call")
    product = world.fake.create_product(
        name="Metered", prices={"usd": 2900, "eur": 2700}, metered=[("eur", meter, "1")]
    )
    await metered_plan(world, "metered", product, polar_event="api.call")
    payload = await open_checkout(world, "metered")
    [error] = payload["userErrors"]
    assert error["code"] == "PROVIDER_REF_MISSING"
    assert world.fake.checkouts == {}


async def test_a_meter_without_a_polar_reference_is_refused_before_polar_is_asked(
    world: World,
) -> None:
    meter = world.fake.create_meter(name="API calls", event_name="api.call")
    product = world.fake.create_product(
        name="Metered", prices={"usd": 2900}, metered=[("usd", meter, "1")]
    )
    await metered_plan(world, "metered", product, polar_event=None)
    payload = await open_checkout(world, "metered")
    [error] = payload["userErrors"]
    assert error["code"] == "PROVIDER_REF_MISSING" and '"api_calls"' in error["message"]
    assert world.fake.calls == []


def test_counted_event_names_reads_nested_filters() -> None:
    meter_filter = {
        "conjunction": "or",
        "clauses": [
            {"property": "name", "operator": "eq", "value": "a"},
            {"property": "name", "operator": "ne", "value": "b"},
            {"property": "model", "operator": "eq", "value": "c"},
            {
                "conjunction": "and",
                "clauses": [{"property": "name", "operator": "eq", "value": "d"}],
            },
        ],
    }
    assert counted_event_names(meter_filter) == {"a", "d"}
    assert counted_event_names(None) == set()


async def test_a_token_that_cannot_read_products_skips_the_check(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    meter = world.fake.create_meter(name="Tokens", event_name="tokens.used")
    product = world.fake.create_product(
        name="Metered", prices={"usd": 2900}, metered=[("usd", meter, "1")]
    )
    await metered_plan(world, "metered", product, polar_event="api.call")
    world.fake.error_next(403, {"error": "NotPermitted", "detail": "Not permitted"})
    with caplog.at_level(logging.WARNING, logger="billing_gql.provider.polar"):
        payload = await open_checkout(world, "metered")
    assert payload["userErrors"] == [] and payload["checkout"]["status"] == "OPEN"
    assert "products:read" in caplog.text


async def test_an_outage_while_reading_the_product_fails_the_checkout(world: World) -> None:
    meter = world.fake.create_meter(name="API calls", event_name="api.call")
    product = world.fake.create_product(
        name="Metered", prices={"usd": 2900}, metered=[("usd", meter, "1")]
    )
    await metered_plan(world, "metered", product, polar_event="api.call")
    world.fake.fail_next(10, status=503)
    payload = await open_checkout(world, "metered")
    assert [e["code"] for e in payload["userErrors"]] == ["PROVIDER_UNAVAILABLE"]
    assert payload["checkout"]["status"] == "FAILED"
    assert world.fake.checkouts == {}
