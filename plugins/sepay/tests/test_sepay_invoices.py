"""Invoices of a bank-transfer (SePay) subscription, end to end through GraphQL, the test clock
and the fake's webhooks: usage billed in arrears when a period closes (a checkout of its own, or
the open renewal), paid by transfer; late usage on the next invoice exactly once; the PDF; who
may read what; the invoice events, once each."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pypdf import PdfReader
from sepay_helpers import (
    PRICE,
    deliver,
    get_checkout,
    iso,
    make_customer,
    make_plan,
    open_checkout,
    payments,
    session_for,
    set_clock,
)

import billing_gql_sepay.plugin
from billing_gql.settings import BillingSettings, InvoiceSettings, OutboundSettings, Settings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql_sepay.testing import FakeSePay
from conftest import ROUTES

T0 = datetime(2027, 1, 31, 3, 0, tzinfo=UTC)
PERIOD_END = datetime(2027, 2, 28, 3, 0, tzinfo=UTC)
NEXT_END = datetime(2027, 3, 31, 3, 0, tzinfo=UTC)
ERRORS = "userErrors { field message code }"
ADVANCE = """mutation($to: DateTime!) { advanceClock(to: $to) { now userErrors { code } } }"""

INVOICE_FIELDS = """id number status isCreditNote provider currency periodStart periodEnd
  issuedAt dueAt paidAt pdfUrl hostedUrl
  customer { id } subscription { id } checkout { id purpose status }
  lines { description kind quantity unitAmount { amount } amount { amount currency }
          periodStart periodEnd }
  subtotal { amount currency } discount { amount } tax { amount }
  total { amount currency } amountPaid { amount } amountDue { amount }"""

INVOICES = f"""query($c: ID, $s: InvoiceStatus) {{ invoices(customerId: $c, status: $s) {{
  nodes {{ {INVOICE_FIELDS} }} pageInfo {{ hasNextPage }} }} }}"""

INVOICE = f"""query($id: ID!) {{ invoice(id: $id) {{ {INVOICE_FIELDS} }} }}"""

SUB_INVOICES = f"""query($id: ID!) {{ subscription(id: $id) {{ status currentPeriodEnd
  renewalCheckout {{ id purpose status amount {{ amount currency }}
    bankTransfer {{ reference qrCodeUrl amount {{ amount currency }} }} }}
  invoices {{ {INVOICE_FIELDS} }} }} }}"""


class Hooks:
    """An outgoing webhook endpoint receiving every ``invoice.*`` event."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return httpx.Response(204)

    def of(self, invoice_id: str) -> list[str]:
        return [b["type"] for b in self.bodies if b["data"]["invoice_id"] == invoice_id]


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture
async def api(
    make_api: Any,
    fake: FakeSePay,
    clean_database: TestDatabase,
    app_settings: Settings,
    hooks: Hooks,
) -> AsyncIterator[ApiClient]:
    await set_clock(clean_database.url, T0)
    settings = Settings(
        database=app_settings.database,
        auth=app_settings.auth,
        plugins=app_settings.plugins,
        invoices=InvoiceSettings(
            seller_name="Acme Software JSC",
            seller_address="1 Tràng Tiền\nHà Nội",
            seller_tax_id="0101234567",
        ),
    )
    async with make_api(
        settings=settings,
        plugins=[billing_gql_sepay.plugin],
        env=fake.env(api=False),
        transports={
            "sepay": fake.transport(),
            "webhook_endpoints": httpx.MockTransport(hooks.handler),
        },
        billing=BillingSettings(manual_provider=True, routes=ROUTES, test_clock=True),
        outbound=OutboundSettings(allow_private_webhook_targets=True),
    ) as client:
        await client.admin(
            """mutation { createWebhookEndpoint(input: {url: "https://app.example/hook",
               events: ["invoice.*"]}) { secret } }"""
        )
        yield client


async def advance(api: ApiClient, to: datetime) -> None:
    data = await api.admin(ADVANCE, {"to": to.isoformat()})
    assert data["advanceClock"]["userErrors"] == []


async def metered_plan(api: ApiClient) -> None:
    """199000 VND a month, plus API calls: 100 included, then 10 VND each."""
    data = await api.admin(
        f"""mutation {{ createMeter(input: {{code: "api_calls", name: "API calls",
            aggregation: SUM}}) {{ {ERRORS} }} }}"""
    )
    assert data["createMeter"]["userErrors"] == []
    await make_plan(
        api,
        charges=[
            {
                "meter": "api_calls",
                "model": "PER_UNIT",
                "currency": "VND",
                "unitAmount": "10",
                "includedQuantity": "100",
            }
        ],
    )


async def use(api: ApiClient, customer: str, event_id: str, value: int, at: datetime) -> None:
    data = await api.admin(
        f"""mutation($i: RecordUsageInput!) {{ recordUsage(input: $i) {{ accepted {ERRORS} }} }}""",
        {
            "i": {
                "events": [
                    {
                        "id": event_id,
                        "customerId": customer,
                        "meter": "api_calls",
                        "value": str(value),
                        "timestamp": at.isoformat(),
                    }
                ]
            }
        },
    )
    assert data["recordUsage"]["userErrors"] == [], data


async def subscribed(
    api: ApiClient, fake: FakeSePay, external_id: str = "usr_vn"
) -> tuple[str, str]:
    """A SePay subscription paid by transfer at T0; (customer id, subscription id)."""
    await metered_plan(api)
    customer = await make_customer(api, external_id)
    checkout = await open_checkout(api, customer)
    await deliver(api, fake, PRICE, f"{checkout['bankTransfer']['reference']} thanh toan", at=T0)
    sub = (await get_checkout(api, checkout["id"]))["subscription"]
    assert sub["status"] == "ACTIVE" and iso(sub["currentPeriodEnd"]) == PERIOD_END
    return customer, sub["id"]


async def of_subscription(api: ApiClient, sub_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (await api.admin(SUB_INVOICES, {"id": sub_id}))["subscription"]
    return found


def pdf_text(body: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(body)).pages)


def lines(invoice: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(li["kind"], li["quantity"], li["amount"]["amount"]) for li in invoice["lines"]]


async def test_usage_billed_in_arrears_by_a_checkout_of_its_own(
    api: ApiClient, fake: FakeSePay, hooks: Hooks
) -> None:
    customer, sub_id = await subscribed(api, fake)
    [first] = (await of_subscription(api, sub_id))["invoices"]
    # The first purchase: invoiced and paid at once (a receipt), numbered from 1.
    assert first["number"] == "INV-2027-000001" and first["status"] == "PAID"
    assert lines(first) == [("PLAN", "1", "199000")]
    assert first["lines"][0]["unitAmount"] == {"amount": "199000"}
    await use(api, customer, "u1", 200, T0)
    await advance(api, T0 + timedelta(days=20))
    await use(api, customer, "u2", 150, T0 + timedelta(days=20))

    # The renewal is issued 3 days ahead, with its invoice; the customer pays it early.
    await advance(api, PERIOD_END - timedelta(days=3))
    state = await of_subscription(api, sub_id)
    renewal = state["renewalCheckout"]
    assert renewal["purpose"] == "renewal" and renewal["amount"]["amount"] == "199000"
    renewal_invoice = next(i for i in state["invoices"] if i["checkout"]["id"] == renewal["id"])
    assert renewal_invoice["status"] == "OPEN" and renewal_invoice["number"] == "INV-2027-000002"
    assert renewal_invoice["periodStart"] == "2027-02-28T03:00:00Z"
    await deliver(
        api,
        fake,
        PRICE,
        f"{renewal['bankTransfer']['reference']} gia han",
        at=PERIOD_END - timedelta(days=2),
    )
    await advance(api, PERIOD_END - timedelta(days=1))
    assert (await api.admin(INVOICE, {"id": renewal_invoice["id"]}))["invoice"]["status"] == "PAID"

    # The period closes: 350 units, 100 included, 10 VND each → 2500 VND, asked for by a
    # checkout of its own with the same bank-transfer instructions.
    await advance(api, PERIOD_END)
    state = await of_subscription(api, sub_id)
    usage_checkout = state["renewalCheckout"]
    assert usage_checkout["purpose"] == "invoice" and usage_checkout["status"] == "OPEN"
    assert usage_checkout["amount"] == {"amount": "2500", "currency": "VND"}
    transfer = usage_checkout["bankTransfer"]
    assert transfer["amount"] == {"amount": "2500", "currency": "VND"}
    assert f"des={transfer['reference']}" in transfer["qrCodeUrl"]
    [usage_invoice] = [i for i in state["invoices"] if i["checkout"]["id"] == usage_checkout["id"]]
    assert usage_invoice["number"] == "INV-2027-000003" and usage_invoice["status"] == "OPEN"
    assert lines(usage_invoice) == [("USAGE", "250", "2500")]
    usage_line = usage_invoice["lines"][0]
    assert usage_line["description"] == "API calls"
    assert (usage_line["periodStart"], usage_line["periodEnd"]) == (
        "2027-01-31T03:00:00Z",
        "2027-02-28T03:00:00Z",
    )
    assert usage_invoice["total"] == {"amount": "2500", "currency": "VND"}
    assert usage_invoice["amountDue"] == {"amount": "2500"}

    # Paid by transfer (the fake's webhook): the invoice is PAID, a receipt.
    paid_at = PERIOD_END + timedelta(hours=5)
    await deliver(api, fake, 2500, f"{transfer['reference']} phi su dung", at=paid_at)
    paid = (await api.admin(INVOICE, {"id": usage_invoice["id"]}))["invoice"]
    assert paid["status"] == "PAID" and paid["amountPaid"] == {"amount": "2500"}
    assert paid["amountDue"] == {"amount": "0"} and iso(paid["paidAt"]) == paid_at
    assert (await get_checkout(api, usage_checkout["id"]))["status"] == "COMPLETED"

    # The PDF, through the signed link alone: seller, buyer, number, lines, total, PAID.
    response = await api.http.get(paid["pdfUrl"])
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    text = pdf_text(response.content)
    [payment] = [p for p in await payments(api, customer) if p["amount"]["amount"] == "2500"]
    for expected in (
        "INV-2027-000003",
        "2,500 VND",
        "PAID",
        "Acme Software JSC",
        "Trang Tien",
        "0101234567",
        "usr_vn",
        "API calls",
        "sepay",
        payment["providerRef"],
    ):
        assert expected in text, (expected, text)

    # A later advance bills nothing again.
    await advance(api, PERIOD_END + timedelta(days=2))
    assert len((await of_subscription(api, sub_id))["invoices"]) == 3
    # The invoice events (sent by the worker's sweep): each once, in order.
    assert hooks.of(usage_invoice["id"]) == ["invoice.created", "invoice.finalized", "invoice.paid"]
    assert hooks.of(first["id"]) == ["invoice.created", "invoice.finalized", "invoice.paid"]


async def test_usage_joins_the_open_renewal_and_late_usage_the_next_invoice_once(
    api: ApiClient, fake: FakeSePay, hooks: Hooks
) -> None:
    customer, sub_id = await subscribed(api, fake)
    await use(api, customer, "u1", 350, T0)
    await advance(api, PERIOD_END - timedelta(days=3))
    renewal = (await of_subscription(api, sub_id))["renewalCheckout"]
    [issued] = [
        i for i in (await of_subscription(api, sub_id))["invoices"] if i["status"] == "OPEN"
    ]
    # The period closes while the renewal is unpaid: the usage joins it; its invoice is
    # reissued (a finalized invoice is never edited: the first is voided, keeping its number).
    await advance(api, PERIOD_END)
    state = await of_subscription(api, sub_id)
    assert state["renewalCheckout"]["id"] == renewal["id"]
    assert state["renewalCheckout"]["amount"]["amount"] == "201500"
    assert state["renewalCheckout"]["bankTransfer"]["amount"]["amount"] == "201500"
    by_number = {i["number"]: i for i in state["invoices"]}
    assert by_number[issued["number"]]["status"] == "VOID"
    assert hooks.of(issued["id"]) == ["invoice.created", "invoice.finalized", "invoice.voided"]
    [current] = [i for i in state["invoices"] if i["status"] == "OPEN"]
    assert current["number"] == "INV-2027-000003"
    assert lines(current) == [("PLAN", "1", "199000"), ("USAGE", "250", "2500")]
    reference = state["renewalCheckout"]["bankTransfer"]["reference"]
    await deliver(api, fake, 201_500, f"{reference} gia han", at=PERIOD_END + timedelta(hours=1))
    assert (await api.admin(INVOICE, {"id": current["id"]}))["invoice"]["status"] == "PAID"

    # 30 more units arrive late for the closed period (allowed): the next close bills them,
    # recomputed for that period less what it billed: 280 × 10 − 2500 = 300 VND.
    await use(api, customer, "late", 30, PERIOD_END - timedelta(days=1))
    await advance(api, NEXT_END)
    state = await of_subscription(api, sub_id)
    [next_open] = [i for i in state["invoices"] if i["status"] == "OPEN"]
    assert lines(next_open) == [("PLAN", "1", "199000"), ("USAGE", "30", "300")]
    assert next_open["lines"][1]["description"].startswith("Late usage: API calls")
    assert next_open["total"]["amount"] == "199300"
    # A further close bills the late usage no more.
    reference = state["renewalCheckout"]["bankTransfer"]["reference"]
    await deliver(api, fake, 199_300, f"{reference} gia han", at=NEXT_END + timedelta(hours=1))
    await advance(api, datetime(2027, 4, 30, 3, 0, tzinfo=UTC))
    state = await of_subscription(api, sub_id)
    late_lines = [
        li for i in state["invoices"] for li in i["lines"] if li["description"].startswith("Late")
    ]
    assert len(late_lines) == 1
    # Invoice numbers: gapless, in order of finalization.
    numbers = sorted(i["number"] for i in state["invoices"])
    assert numbers == [f"INV-2027-{n:06d}" for n in range(1, len(numbers) + 1)]


async def test_a_customer_reads_only_its_own_invoices_and_pdfs(
    api: ApiClient, fake: FakeSePay
) -> None:
    customer, _ = await subscribed(api, fake)
    other = await make_customer(api, "usr_other")
    mine, theirs = await session_for(api, customer), await session_for(api, other)
    result = await api.gql(INVOICES, {"c": None}, token=mine)
    [invoice] = result.data["invoices"]["nodes"]
    assert invoice["customer"] == {"id": customer}
    # Another customer: nothing listed, the invoice and its list refused, the PDF refused.
    assert (await api.gql(INVOICES, {"c": None}, token=theirs)).data["invoices"]["nodes"] == []
    denied = await api.gql(INVOICE, {"id": invoice["id"]}, token=theirs)
    assert denied.errors and denied.errors[0]["extensions"]["code"] == "FORBIDDEN"
    denied = await api.gql(INVOICES, {"c": customer}, token=theirs)
    assert denied.errors and denied.errors[0]["extensions"]["code"] == "FORBIDDEN"
    path = f"/invoices/{invoice['id']}.pdf"
    assert (
        await api.http.get(path, headers={"authorization": f"Bearer {theirs}"})
    ).status_code == 403
    assert (await api.http.get(path)).status_code == 401
    own = await api.http.get(path, headers={"authorization": f"Bearer {mine}"})
    assert own.status_code == 200 and invoice["number"] in pdf_text(own.content)
    admin = await api.http.get(path, headers={"authorization": f"Bearer {api.admin_key}"})
    assert admin.status_code == 200
    # A signed link works alone; a tampered or expired one does not.
    signed = invoice["pdfUrl"]
    assert (await api.http.get(signed)).status_code == 200
    assert (
        await api.http.get(signed.replace(invoice["id"], _other_id(invoice["id"])))
    ).status_code == 401
    expired = signed.split("?")[0] + "?expires=1&signature=" + signed.split("signature=")[1]
    assert (await api.http.get(expired)).status_code == 401
    assert (
        await api.http.get(
            f"/invoices/{_other_id(invoice['id'])}.pdf",
            headers={"authorization": f"Bearer {api.admin_key}"},
        )
    ).status_code == 404


def _other_id(invoice_id: str) -> str:
    return invoice_id[:-1] + ("0" if invoice_id[-1] != "0" else "1")
