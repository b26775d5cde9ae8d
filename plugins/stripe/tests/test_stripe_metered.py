"""Stripe bills usage: a usage charge's metered price goes into the Checkout Session without a
quantity, a plan whose charge lacks one is refused before anything is written, and the fake
Stripe checks a metered line the way Stripe does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from stripe_helpers import form
from test_stripe_e2e import ERRORS, Env, checkout, make_customer, subscriptions

import billing_gql_stripe.plugin
from billing_gql.testing import TestDatabase
from billing_gql_stripe.mapping import subscription_snapshot
from billing_gql_stripe.testing import FakeStripe


@pytest.fixture
async def app(make_api, clean_database: TestDatabase) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    """The app over HTTP on a fake Stripe."""
    fake = FakeStripe()
    async with make_api(
        plugins=[billing_gql_stripe.plugin], env=fake.env(), transports={"stripe": fake.transport()}
    ) as api:
        yield Env(api, fake, clean_database.url, None)  # type: ignore[arg-type]


async def make_meter(env: Env, code: str, stripe_event: str | None) -> None:
    refs = [{"provider": "stripe", "ref": stripe_event}] if stripe_event else []
    data = await env.gql(
        f"mutation($i: CreateMeterInput!) {{ createMeter(input: $i) {{ {ERRORS} }} }}",
        i={"code": code, "name": code, "aggregation": "COUNT", "providerRefs": refs},
    )
    assert data["createMeter"]["userErrors"] == []


async def make_metered_plan(
    env: Env, code: str, *, charge_refs: list[dict[str, str]], meter: str = "api_calls"
) -> dict[str, Any]:
    base = env.fake.create_price(unit_amount=2900)
    data = await env.gql(
        f"""mutation($i: CreatePlanInput!) {{ createPlan(input: $i) {{
              plan {{ code charges {{ meter providerRefs {{ provider ref currency }} }} }}
              {ERRORS} }} }}""",
        i={
            "code": code,
            "name": code,
            "interval": "MONTH",
            "prices": [{"currency": "USD", "amount": "29.00"}],
            "providerRefs": [{"provider": "stripe", "ref": base, "currency": "USD"}],
            "charges": [
                {
                    "meter": meter,
                    "model": "PER_UNIT",
                    "currency": "USD",
                    "unitAmount": "0.01",
                    "providerRefs": charge_refs,
                }
            ],
        },
    )
    assert data["createPlan"]["userErrors"] == []
    return {"base": base, **data["createPlan"]["plan"]}


async def with_errors(env: Env, query: str, **variables: Any) -> Any:
    """``data`` of an admin request that may answer userErrors."""
    response = await env.api.gql(query, variables, admin=True)
    assert response.status == 200 and not response.errors, response.body
    return response.body["data"]


def session_posts(fake: FakeStripe) -> list[dict[str, Any]]:
    return [r.params for r in fake.requests if r.path == "/v1/checkout/sessions"]


async def test_a_metered_plan_sends_its_metered_price_without_a_quantity(app: Env) -> None:
    meter_id = app.fake.create_meter("api_requests")
    metered = app.fake.create_price(unit_amount=1, meter=meter_id)
    await make_meter(app, "api_calls", "api_requests")
    plan = await make_metered_plan(
        app, "metered", charge_refs=[{"provider": "stripe", "ref": metered, "currency": "USD"}]
    )
    assert plan["charges"] == [
        {
            "meter": "api_calls",
            "providerRefs": [{"provider": "stripe", "ref": metered, "currency": "USD"}],
        }
    ]
    customer = await make_customer(app)
    made = await checkout(app, customer, "metered")
    assert made["status"] == "OPEN" and made["amount"] == {"amount": "29.00", "currency": "USD"}
    [sent] = session_posts(app.fake)
    assert sent["line_items"] == [{"price": plan["base"], "quantity": "1"}, {"price": metered}]

    app.fake.complete_checkout(app.fake.session_for(made["id"])["id"])
    await app.deliver()
    [sub] = await subscriptions(app, customer)
    assert sub["status"] == "ACTIVE" and sub["plan"]["code"] == "metered"
    items = app.fake.subscriptions[sub["providerSubscriptionId"]]["items"]["data"]
    assert [(i["price"]["id"], i["quantity"]) for i in items] == [
        (plan["base"], 1),
        (metered, None),
    ]

    # Stripe does not promise the items' order: the plan is read from the licensed item.
    sub_obj = app.fake.subscriptions[sub["providerSubscriptionId"]]
    sub_obj["items"]["data"].reverse()
    snapshot = subscription_snapshot(sub_obj)
    assert snapshot.plan_ref == plan["base"] and snapshot.quantity == 1


async def test_a_charge_without_its_stripe_price_is_refused_before_anything_is_written(
    app: Env,
) -> None:
    await make_meter(app, "api_calls", "api_requests")
    await make_metered_plan(app, "unbilled", charge_refs=[])
    customer = await make_customer(app)
    data = await with_errors(
        app,
        f"mutation($i: CreateCheckoutInput!) {{ createCheckout(input: $i) {{ checkout {{ id }} {ERRORS} }} }}",
        i={
            "customerId": customer,
            "planCode": "unbilled",
            "provider": "stripe",
            "successUrl": "https://app.example/ok",
        },
    )
    result = data["createCheckout"]
    assert result["checkout"] is None
    [error] = result["userErrors"]
    assert error["code"] == "PROVIDER_REF_MISSING" and error["field"] == ["input", "planCode"]
    assert '"api_calls"' in error["message"] and "metered price" in error["message"]
    assert await app.rows("SELECT id FROM checkouts") == []
    assert session_posts(app.fake) == []


async def test_a_charged_meter_without_a_stripe_reference_is_refused(app: Env) -> None:
    meter_id = app.fake.create_meter("api_requests")
    metered = app.fake.create_price(unit_amount=1, meter=meter_id)
    await make_meter(app, "api_calls", None)  # its usage would never reach Stripe
    await make_metered_plan(
        app, "unforwarded", charge_refs=[{"provider": "stripe", "ref": metered}]
    )
    customer = await make_customer(app)
    data = await with_errors(
        app,
        f"mutation($i: CreateCheckoutInput!) {{ createCheckout(input: $i) {{ checkout {{ id }} {ERRORS} }} }}",
        i={"customerId": customer, "planCode": "unforwarded", "provider": "stripe"},
    )
    [error] = data["createCheckout"]["userErrors"]
    assert error["code"] == "PROVIDER_REF_MISSING" and '"api_calls"' in error["message"]
    assert await app.rows("SELECT id FROM checkouts") == []


async def test_a_charge_reference_in_another_currency_is_refused(app: Env) -> None:
    await make_meter(app, "api_calls", "api_requests")
    data = await with_errors(
        app,
        f"mutation($i: CreatePlanInput!) {{ createPlan(input: $i) {{ {ERRORS} }} }}",
        i={
            "code": "bad",
            "name": "bad",
            "interval": "MONTH",
            "prices": [{"currency": "USD", "amount": "29.00"}],
            "charges": [
                {
                    "meter": "api_calls",
                    "model": "PER_UNIT",
                    "currency": "USD",
                    "unitAmount": "0.01",
                    "providerRefs": [
                        {"provider": "stripe", "ref": "price_eur", "currency": "EUR"},
                        {"provider": "", "ref": "x"},
                    ],
                }
            ],
        },
    )
    errors = {tuple(e["field"]): e["code"] for e in data["createPlan"]["userErrors"]}
    assert errors == {
        ("input", "charges", "0", "providerRefs", "0", "currency"): "INVALID_INPUT",
        ("input", "charges", "0", "providerRefs", "1", "provider"): "INVALID_INPUT",
    }


async def test_a_customer_token_sees_no_charge_references(app: Env) -> None:
    meter_id = app.fake.create_meter("api_requests")
    metered = app.fake.create_price(unit_amount=1, meter=meter_id)
    await make_meter(app, "api_calls", "api_requests")
    await make_metered_plan(app, "metered", charge_refs=[{"provider": "stripe", "ref": metered}])
    response = await app.api.gql(
        '{ plan(code: "metered") { charges { meter providerRefs { ref } } } }'
    )
    assert response.ok()["plan"]["charges"] == [{"meter": "api_calls", "providerRefs": []}]


def test_the_fake_takes_a_metered_line_only_without_a_quantity(fake: FakeStripe) -> None:
    base = fake.create_price(unit_amount=1000)
    metered = fake.create_price(unit_amount=2, meter=fake.create_meter("api_requests"))
    with httpx.Client(
        transport=fake.transport(),
        base_url="https://api.stripe.test",
        headers={
            "authorization": f"Bearer {fake.api_key}",
            "content-type": "application/x-www-form-urlencoded",
        },
    ) as client:

        def create(lines: list[dict[str, Any]]) -> httpx.Response:
            params = {"mode": "subscription", "line_items": lines, "success_url": "https://x/ok"}
            return client.post("/v1/checkout/sessions", content=form(params))

        refused = create([{"price": base, "quantity": 1}, {"price": metered, "quantity": 1}])
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["param"] == "line_items[1][quantity]" and "metered" in error["message"]
        licensed = create([{"price": base}])
        assert licensed.status_code == 400
        assert licensed.json()["error"]["param"] == "line_items[0][quantity]"
        taken = create([{"price": base, "quantity": 1}, {"price": metered}])
        assert taken.status_code == 200, taken.text
        assert taken.json()["amount_total"] == 1000
    assert fake.prices[metered]["recurring"]["usage_type"] == "metered"
