"""Amounts and quantities are bounded where they enter (issue #11, hole 10): nothing a caller or
a provider sends can overflow PostgreSQL's bigint later and answer INTERNAL_SERVER_ERROR."""

from __future__ import annotations

from typing import Any

import pytest
from billing_helpers import (
    CREATE_PLAN,
    create_checkout,
    db_rows,
    make_customer,
    make_plan,
    meter,
    plan_input,
)
from fakes import FAKE_ENV, FakeBank, FakePayApi, FakePlugin, bank_transfer

from billing_gql.money import (
    MAX_AMOUNT_MINOR,
    MAX_QUANTITY,
    MAX_TOTAL_MINOR,
    AmountTooLarge,
    Money,
    check_amount,
)
from billing_gql.settings import BillingSettings
from billing_gql.testing import ApiClient, TestDatabase


def test_the_bounds_keep_amount_times_quantity_inside_bigint() -> None:
    assert MAX_TOTAL_MINOR == MAX_AMOUNT_MINOR * MAX_QUANTITY
    assert 9 * MAX_TOTAL_MINOR < 2**63 - 1  # and a few such totals added up
    assert Money.parse("10000000000.00", "USD").minor == MAX_AMOUNT_MINOR
    for text in ("10000000000.01", "-10000000000.01", "9e21"):
        with pytest.raises(AmountTooLarge) as caught:
            Money.parse(text, "USD", allow_negative=True)
        assert caught.value.code == "AMOUNT_TOO_LARGE"
    assert check_amount(-MAX_AMOUNT_MINOR) == -MAX_AMOUNT_MINOR
    with pytest.raises(AmountTooLarge):
        check_amount(10**19)


async def plan_errors(api: ApiClient, **fields: Any) -> dict[tuple[str, ...], str]:
    result = await api.gql(CREATE_PLAN, {"input": plan_input(**fields)}, admin=True)
    assert result.status == 200 and not result.errors, result.body
    assert result.data["createPlan"]["plan"] is None
    return {tuple(e["field"]): e["code"] for e in result.data["createPlan"]["userErrors"]}


async def test_plan_prices_past_the_bound_are_refused(api: ApiClient) -> None:
    errors = await plan_errors(
        api,
        prices=[
            {"currency": "VND", "amount": "90000000000000000"},  # 9e16
            {"currency": "USD", "amount": "9000000000000000000000"},  # 9e21
            {"currency": "JPY", "amount": "1000000000001"},
            {"currency": "EUR", "amount": "10000000000.00"},  # exactly the bound: fine
        ],
    )
    assert errors == {
        ("input", "prices", "0", "amount"): "AMOUNT_TOO_LARGE",
        ("input", "prices", "1", "amount"): "AMOUNT_TOO_LARGE",
        ("input", "prices", "2", "amount"): "AMOUNT_TOO_LARGE",
    }
    assert (await api.gql("{ plans { code } }")).ok()["plans"] == []


async def test_usage_prices_and_quantities_past_the_bound_are_refused(api: ApiClient) -> None:
    await meter(api, "calls")
    errors = await plan_errors(
        api,
        charges=[
            {"meter": "calls", "model": "PER_UNIT", "currency": "USD", "unitAmount": "2e10"},
            {"meter": "calls", "model": "PER_UNIT", "currency": "USD", "unitAmount": "1e19"},
            {"meter": "calls", "model": "PER_UNIT", "currency": "USD", "unitAmount": "1e-20000"},
            {"meter": "calls", "model": "PER_UNIT", "currency": "USD", "unitAmount": "0.0000015"},
            {
                "meter": "calls",
                "model": "VOLUME",
                "currency": "VND",
                "includedQuantity": "1e19",
                "tiers": [
                    {"upTo": "1e400", "unitAmount": "1", "flatAmount": "1000000000001"},
                    {"upTo": None, "unitAmount": "0.000001"},
                ],
            },
        ],
        features=[
            {"feature": "seats", "limit": "1e200000"},
            {"feature": "gb", "limit": "1e-20000"},
        ],
    )
    assert errors == {
        ("input", "charges", "0", "unitAmount"): "AMOUNT_TOO_LARGE",
        ("input", "charges", "1", "unitAmount"): "AMOUNT_TOO_LARGE",
        ("input", "charges", "2", "unitAmount"): "INVALID_AMOUNT",  # 20000 decimal places
        ("input", "charges", "4", "includedQuantity"): "QUANTITY_TOO_LARGE",
        ("input", "charges", "4", "tiers", "0", "upTo"): "QUANTITY_TOO_LARGE",
        ("input", "charges", "4", "tiers", "0", "flatAmount"): "AMOUNT_TOO_LARGE",
        ("input", "features", "0", "limit"): "QUANTITY_TOO_LARGE",
        ("input", "features", "1", "limit"): "INVALID_INPUT",
    }


async def test_the_largest_price_times_the_largest_quantity_is_a_checkout(
    api: ApiClient,
) -> None:
    prices = [{"currency": "USD", "amount": "10000000000.00"}]
    await make_plan(api, prices=prices)
    customer = await make_customer(api)
    too_many = await create_checkout(
        api,
        customerId=customer,
        planCode="pro",
        provider="manual",
        currency="USD",
        quantity=MAX_QUANTITY + 1,
    )
    assert too_many["checkout"] is None
    assert [(e["field"], e["code"]) for e in too_many["userErrors"]] == [
        (["input", "quantity"], "QUANTITY_TOO_LARGE")
    ]
    most = await create_checkout(
        api,
        customerId=customer,
        planCode="pro",
        provider="manual",
        currency="USD",
        quantity=MAX_QUANTITY,
    )
    assert most["userErrors"] == []
    assert most["checkout"]["amount"] == {"amount": "10000000000000000.00", "currency": "USD"}


async def test_a_provider_reported_amount_past_the_bound_fails_once_for_good(
    make_api: Any, clean_database: TestDatabase
) -> None:
    async with make_api(
        plugins=[FakePlugin()],
        env=FAKE_ENV,
        billing=BillingSettings(),
        transports={"fakepay": FakePayApi().transport()},
    ) as api:
        assert FakeBank.name == "fakebank"
        body, headers = bank_transfer(7, 10**19, None, "2027-01-31T13:00:00+00:00")
        response = await api.post_webhook("fakebank", body, headers)
        assert response.status_code == 200  # stored: the provider does not send it again
    [row] = await db_rows(
        clean_database.url,
        "SELECT status, attempts, error, next_attempt_at FROM webhook_deliveries",
    )
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["next_attempt_at"] is None  # never retried (an admin may replay it)
    assert "AmountTooLarge" in row["error"]
    assert await db_rows(clean_database.url, "SELECT id FROM payments") == []
