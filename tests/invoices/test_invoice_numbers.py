"""Invoice numbers: gapless per (prefix, year), given at finalization, never twice — a database
guarantee (the counter row is taken in the finalizing transaction), under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
from billing_helpers import (
    checkout_ok,
    complete,
    make_customer,
    manual_clock,
    usd_plan_id,
)

from billing_gql.core.usage import InvoiceLine
from billing_gql.invoices.service import create_invoice, finalize_invoice
from billing_gql.money import Money
from billing_gql.testing import TestDatabase
from billing_gql.testing.fixtures import MakeApi

NOW = datetime(2031, 1, 15, 10, 0, tzinfo=UTC)
NUMBERS = """query { invoices(first: 100) { nodes { number status total { amount } } } }"""


async def test_twenty_concurrent_checkouts_are_numbered_1_to_20(
    make_api: MakeApi, clean_database: TestDatabase
) -> None:
    """Twenty manual purchases completed at once over GraphQL: each gets a receipt, and the
    receipts take the numbers 1 to 20, no gap, no repeat."""
    async with make_api(billing=manual_clock()) as api:
        await usd_plan_id(api, "pro")
        customers = [await make_customer(api, f"usr_{i}") for i in range(20)]
        checkouts = [
            await checkout_ok(api, customerId=c, planCode="pro", provider="manual")
            for c in customers
        ]
        done = await asyncio.gather(*(complete(api, c["id"]) for c in checkouts))
        assert {c["status"] for c in done} == {"COMPLETED"}
        nodes = (await api.admin(NUMBERS))["invoices"]["nodes"]
    year = nodes[0]["number"].split("-")[1]
    assert sorted(n["number"] for n in nodes) == [f"INV-{year}-{i:06d}" for i in range(1, 21)]
    assert {(n["status"], n["total"]["amount"]) for n in nodes} == {("PAID", "29.00")}


async def test_twenty_concurrent_finalizations_and_a_rollback(
    clean_database: TestDatabase,
) -> None:
    """Twenty transactions finalize at the same moment (each holds its draft until all have
    started): numbers 1..20. A finalization rolled back gives its number back."""
    pool = await asyncpg.create_pool(clean_database.url, min_size=21, max_size=21)
    try:
        line = InvoiceLine("Seat", Decimal(1), Money(1000, "USD"), kind="ONE_TIME")
        drafts = []
        async with pool.acquire() as conn, conn.transaction():
            for _ in range(20):
                invoice, _ = await create_invoice(
                    conn,
                    "TST",
                    {"currency": "USD", "provider": "manual"},
                    [line],
                    NOW,
                    finalize=False,
                )
                drafts.append(invoice.id)
        # A finalization that rolls back first: its number must come back.
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await finalize_invoice(conn, "TST", drafts[0], NOW)
            await tx.rollback()
        started = asyncio.Barrier(20)

        async def finalize(invoice_id: object) -> str:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT 1")
                await started.wait()
                row = await finalize_invoice(conn, "TST", invoice_id, NOW)  # type: ignore[arg-type]
                await asyncio.sleep(0.01)  # hold the counter while the others queue on it
                return str(row["number"])

        numbers = await asyncio.gather(*(finalize(i) for i in drafts))
        assert sorted(numbers) == [f"TST-2031-{i:06d}" for i in range(1, 21)]
        # Another year starts again at 1; the counter of 2031 is untouched by it.
        async with pool.acquire() as conn, conn.transaction():
            invoice, _ = await create_invoice(
                conn,
                "TST",
                {"currency": "USD", "provider": "manual"},
                [line],
                NOW.replace(year=2032),
            )
        assert invoice.number == "TST-2032-000001"
    finally:
        await pool.close()
