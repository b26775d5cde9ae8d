"""invoicePreview through GraphQL over HTTP: base price, usage charges, pending prorations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from billing_helpers import (
    CHANGE,
    PREVIEW,
    Rows,
    make_customer,
    meter,
    record,
    session_for,
    subscribe,
    usd_plan_id,
)

from billing_gql.settings import BillingSettings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import MakeApi

NOW = datetime(2026, 7, 20, tzinfo=UTC)
START = datetime(2026, 7, 5, tzinfo=UTC)
END = datetime(2026, 8, 5, tzinfo=UTC)


def ev(i: str, cid: str, m: str, ts: str = "2026-07-10T00:00:00Z", **extra: Any) -> dict[str, Any]:
    return {"id": i, "customerId": cid, "meter": m, "timestamp": ts, **extra}


async def test_preview_lines_and_totals(clocked: ApiClient, rows: Rows) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "tokens", "SUM")
    await meter(clocked, "storage", "MAX")
    await meter(clocked, "seats", "LATEST")
    await meter(clocked, "users", "UNIQUE_COUNT", property="user")
    plan_id = await usd_plan_id(
        clocked,
        "pro",
        prices=[{"currency": "USD", "amount": "29.00"}, {"currency": "VND", "amount": "199000"}],
        charges=[
            {
                "meter": "tokens",
                "model": "GRADUATED",
                "currency": "USD",
                "includedQuantity": "1000",
                "tiers": [
                    {"upTo": "10000", "unitAmount": "0.0015"},
                    {"upTo": None, "unitAmount": "0.001", "flatAmount": "5"},
                ],
            },
            {
                "meter": "storage",
                "model": "VOLUME",
                "currency": "USD",
                "tiers": [
                    {"upTo": "100", "unitAmount": "0.10"},
                    {"upTo": None, "unitAmount": "0.05", "flatAmount": "1"},
                ],
            },
            {
                "meter": "seats",
                "model": "PACKAGE",
                "currency": "USD",
                "unitAmount": "2.00",
                "packageSize": 5,
            },
            {"meter": "users", "model": "PER_UNIT", "currency": "USD", "unitAmount": "0.333"},
            # Another currency's charge is not on a USD bill.
            {"meter": "tokens", "model": "PER_UNIT", "currency": "VND", "unitAmount": "10"},
        ],
    )
    sub_id = await rows.subscription(cid, plan_id, start=START, end=END, quantity=3)
    other_sub = await rows.subscription(
        cid, plan_id, start=START, end=END, currency="VND", legacy_duplicate=True
    )
    await record(
        clocked,
        [
            ev("t1", cid, "tokens", value="6000"),
            ev("t2", cid, "tokens", value="5500"),
            ev("t-before", cid, "tokens", "2026-07-04T23:59:59Z", value="99999"),
            ev("s1", cid, "storage", value="150"),
            ev("s2", cid, "storage", value="20"),
            ev("seat1", cid, "seats", "2026-07-06T00:00:00Z", value="4"),
            ev("seat2", cid, "seats", "2026-07-08T00:00:00Z", value="11"),
            *[
                ev(f"u{i}", cid, "users", properties={"user": u})
                for i, u in enumerate(["ann", "bob", "ann", "cy"])
            ],
        ],
    )
    await rows.invoice_item(sub_id, "Proration: Basic to Pro", -525, created_at=START)
    await rows.invoice_item(sub_id, "Already invoiced", 10000, invoiced_at=START, created_at=START)
    await rows.invoice_item(other_sub, "Another subscription's", 777, "VND", created_at=START)

    preview = (await clocked.admin(PREVIEW, {"id": sub_id}))["invoicePreview"]
    assert preview["currency"] == "USD"
    assert preview["periodStart"] == "2026-07-05T00:00:00Z"
    assert preview["periodEnd"] == "2026-08-05T00:00:00Z"
    usd = "USD"
    assert preview["lines"] == [
        {"description": "Pro", "quantity": "3", "amount": {"amount": "87.00", "currency": usd}},
        # 11500 - 1000 included = 10500: 10000 x 0.0015 + 500 x 0.001 + 5 = 20.50
        {
            "description": "Tokens",
            "quantity": "10500",
            "amount": {"amount": "20.50", "currency": usd},
        },
        # max 150 -> second volume tier: 150 x 0.05 + 1 = 8.50
        {
            "description": "Storage",
            "quantity": "150",
            "amount": {"amount": "8.50", "currency": usd},
        },
        # latest 11 seats -> ceil(11 / 5) = 3 packages x 2.00
        {"description": "Seats", "quantity": "11", "amount": {"amount": "6.00", "currency": usd}},
        # 3 distinct users x 0.333 = 0.999 -> 1.00
        {"description": "Users", "quantity": "3", "amount": {"amount": "1.00", "currency": usd}},
        {
            "description": "Proration: Basic to Pro",
            "quantity": "1",
            "amount": {"amount": "-5.25", "currency": usd},
        },
    ]
    assert preview["subtotal"] == {"amount": "117.75", "currency": usd}
    assert preview["total"] == preview["subtotal"]

    # The VND subscription: its own base price and its own charge (11500 x 10 = 115000).
    vnd = (await clocked.admin(PREVIEW, {"id": other_sub}))["invoicePreview"]
    assert [(line["description"], line["amount"]["amount"]) for line in vnd["lines"]] == [
        ("Pro", "199000"),
        ("Tokens", "115000"),
        ("Another subscription's", "777"),
    ]
    assert vnd["total"] == {"amount": "314777", "currency": "VND"}


async def test_zero_decimal_currency_rounds_each_line_half_up(
    clocked: ApiClient, rows: Rows
) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    plan_id = await usd_plan_id(
        clocked,
        "jp",
        prices=[{"currency": "JPY", "amount": "1000"}],
        charges=[
            {
                "meter": "calls",
                "model": "PER_UNIT",
                "currency": "JPY",
                "unitAmount": "1.5",
                "includedQuantity": "2",
            }
        ],
    )
    sub_id = await rows.subscription(cid, plan_id, start=START, end=END, currency="JPY")
    await record(clocked, [ev(f"c{i}", cid, "calls") for i in range(5)])
    preview = (await clocked.admin(PREVIEW, {"id": sub_id}))["invoicePreview"]
    # (5 - 2) x 1.5 = 4.5 -> 5 yen
    assert [line["amount"]["amount"] for line in preview["lines"]] == ["1000", "5"]
    assert preview["total"] == {"amount": "1005", "currency": "JPY"}


async def test_usage_below_included_quantity_costs_nothing(clocked: ApiClient, rows: Rows) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    plan_id = await usd_plan_id(
        clocked,
        "basic",
        charges=[
            {
                "meter": "calls",
                "model": "GRADUATED",
                "currency": "USD",
                "includedQuantity": "10",
                "tiers": [{"upTo": None, "unitAmount": "1", "flatAmount": "3"}],
            }
        ],
    )
    sub_id = await rows.subscription(cid, plan_id, start=START, end=END)
    await record(clocked, [ev(f"c{i}", cid, "calls") for i in range(10)])
    preview = (await clocked.admin(PREVIEW, {"id": sub_id}))["invoicePreview"]
    assert preview["lines"][1] == {
        "description": "Calls",
        "quantity": "0",
        "amount": {"amount": "0.00", "currency": "USD"},
    }
    assert preview["total"]["amount"] == "29.00"


async def test_preview_shows_the_engines_pending_proration(
    make_api: MakeApi, clean_database: TestDatabase
) -> None:
    """A plan change mid-period on a push (manual) subscription leaves a pending proration:
    the preview shows the new plan's price, its usage charge and that proration."""
    rows = Rows(clean_database)
    await rows.set_clock(NOW)
    billing = BillingSettings(test_clock=True, manual_provider=True)
    async with make_api(billing=billing) as api:
        cid = await make_customer(api, "acme")
        await meter(api, "calls")
        await usd_plan_id(api, "basic", prices=[{"currency": "USD", "amount": "10.00"}])
        await usd_plan_id(
            api,
            "pro",
            prices=[{"currency": "USD", "amount": "30.00"}],
            charges=[
                {"meter": "calls", "model": "PER_UNIT", "currency": "USD", "unitAmount": "0.25"}
            ],
        )
        sub = await subscribe(api, cid, "basic", currency="USD")
        await rows.set_clock(NOW + timedelta(days=10))
        changed = await api.admin(
            CHANGE, {"input": {"subscriptionId": sub["id"], "planCode": "pro"}}
        )
        proration = changed["changeSubscriptionPlan"]["prorationAmount"]
        assert proration["currency"] == "USD" and proration["amount"] != "0.00"
        stamp = (NOW + timedelta(days=10)).isoformat()
        sent = await record(api, [ev(f"c{i}", cid, "calls", stamp) for i in range(3)])
        assert sent["accepted"] == 3
        preview = (await api.admin(PREVIEW, {"id": sub["id"]}))["invoicePreview"]
    amounts = [line["amount"]["amount"] for line in preview["lines"]]
    assert amounts[:2] == ["30.00", "0.75"]
    assert amounts[2:] == [proration["amount"]]
    total = Decimal("30.00") + Decimal("0.75") + Decimal(proration["amount"])
    assert preview["total"] == {"amount": str(total), "currency": "USD"}


async def test_preview_auth(clocked: ApiClient, rows: Rows) -> None:
    cid = await make_customer(clocked, "acme")
    other = await make_customer(clocked, "other")
    plan_id = await usd_plan_id(clocked, "pro")
    sub_id = await rows.subscription(cid, plan_id, start=START, end=END)
    token = await session_for(clocked, cid)
    other_token = await session_for(clocked, other)
    own = await clocked.gql(PREVIEW, {"id": sub_id}, token=token)
    assert own.ok()["invoicePreview"]["total"]["amount"] == "29.00"
    assert (await clocked.gql(PREVIEW, {"id": sub_id}, token=other_token)).error_codes == [
        "FORBIDDEN"
    ]
    missing = "00000000-0000-0000-0000-000000000000"
    assert (await clocked.gql(PREVIEW, {"id": missing}, token=token)).error_codes == ["FORBIDDEN"]
    assert (await clocked.gql(PREVIEW, {"id": missing}, admin=True)).error_codes == ["NOT_FOUND"]
    assert (await clocked.gql(PREVIEW, {"id": "garbage"}, admin=True)).error_codes == ["NOT_FOUND"]
    assert (await clocked.gql(PREVIEW, {"id": sub_id})).error_codes == ["UNAUTHENTICATED"]
