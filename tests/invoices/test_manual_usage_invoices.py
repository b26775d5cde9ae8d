"""The manual provider bills usage in arrears like bank transfers do, and invoicePreview shows
the open period with the same line kinds the invoice then has."""

from __future__ import annotations

from datetime import timedelta

from billing_helpers import (
    START,
    advance,
    complete,
    iso,
    make_customer,
    make_usd_plan,
    manual_clock,
    meter,
    record,
    subscribe,
)

from billing_gql.testing.fixtures import MakeApi

PREVIEW = """query($id: ID!) { invoicePreview(subscriptionId: $id) {
  lines { kind description quantity unitAmount { amount } amount { amount } } } }"""
SUB = """query($id: ID!) { subscription(id: $id) { currentPeriodEnd
  renewalCheckout { id purpose amount { amount } }
  invoices { number status checkout { id } lines { kind description quantity
    unitAmount { amount } amount { amount } } total { amount } } } }"""


async def test_preview_and_invoice_share_line_kinds(make_api: MakeApi) -> None:
    async with make_api(billing=manual_clock()) as api:
        await advance(api, START)
        await meter(api, "calls", "COUNT")
        charge = {
            "meter": "calls",
            "model": "PER_UNIT",
            "currency": "USD",
            "unitAmount": "0.05",
            "includedQuantity": "2",
        }
        await make_usd_plan(api, "pro", charges=[charge])
        customer = await make_customer(api, "ann")
        sub = await subscribe(api, customer)
        await record(
            api, [{"id": f"e{i}", "customerId": customer, "meter": "calls"} for i in range(12)]
        )
        preview = (await api.admin(PREVIEW, {"id": sub["id"]}))["invoicePreview"]["lines"]
        expected = [
            ("PLAN", "Pro", "1", {"amount": "29.00"}, "29.00"),
            ("USAGE", "Calls", "10", {"amount": "0.05"}, "0.50"),
        ]
        assert [
            (
                li["kind"],
                li["description"],
                li["quantity"],
                li["unitAmount"],
                li["amount"]["amount"],
            )
            for li in preview
        ] == expected
        end = iso(sub["currentPeriodEnd"])
        await advance(api, end)  # the renewal (3 days ahead) is unpaid: the usage joins it
        state = (await api.admin(SUB, {"id": sub["id"]}))["subscription"]
        renewal = state["renewalCheckout"]
        assert renewal["purpose"] == "renewal" and renewal["amount"]["amount"] == "29.50"
        [current] = [i for i in state["invoices"] if i["status"] == "OPEN"]
        assert [(li["kind"], li["amount"]["amount"]) for li in current["lines"]] == [
            ("PLAN", "29.00"),
            ("USAGE", "0.50"),
        ]
        assert current["checkout"] == {"id": renewal["id"]}
        done = await complete(api, renewal["id"])
        assert done["status"] == "COMPLETED"
        state = (await api.admin(SUB, {"id": sub["id"]}))["subscription"]
        assert {i["number"]: i["status"] for i in state["invoices"]}[current["number"]] == "PAID"
        await advance(api, end + timedelta(days=1))
