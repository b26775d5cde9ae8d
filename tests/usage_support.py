"""Helpers for the usage tests: customers, meters, plans, events, and rows the engine owns.

Subscriptions and invoice items are written with SQL here: they belong to the subscription
engine, and these tests only need their rows to exist (usage reads them directly).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from billing_gql.testing import ApiClient, TestDatabase

UPSERT = """mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) {
  customer { id externalId } userErrors { field message code } } }"""
SESSION = """mutation($id: ID!) { createCustomerSession(customerId: $id) {
  token userErrors { field message code } } }"""
CREATE_METER = """mutation($input: CreateMeterInput!) { createMeter(input: $input) {
  meter { code name aggregation property providerRefs { provider ref currency } }
  userErrors { field message code } } }"""
CREATE_PLAN = """mutation($input: CreatePlanInput!) { createPlan(input: $input) {
  plan { id code } userErrors { field message code } } }"""
RECORD = """mutation($input: RecordUsageInput!) { recordUsage(input: $input) {
  accepted duplicates userErrors { field message code } } }"""
USAGE = """query($c: ID, $x: String, $m: String!, $from: DateTime, $to: DateTime) {
  usage(customerId: $c, externalCustomerId: $x, meter: $m, from: $from, to: $to) {
    meter value from to } }"""
PREVIEW = """query($id: ID!) { invoicePreview(subscriptionId: $id) {
  currency periodStart periodEnd
  lines { description quantity amount { amount currency } }
  subtotal { amount currency } total { amount currency } } }"""


async def customer(api: ApiClient, external_id: str) -> str:
    data = await api.admin(UPSERT, {"input": {"externalId": external_id}})
    customer_id: str = data["upsertCustomer"]["customer"]["id"]
    return customer_id


async def session(api: ApiClient, customer_id: str) -> str:
    data = await api.admin(SESSION, {"id": customer_id})
    token: str = data["createCustomerSession"]["token"]
    return token


async def meter(
    api: ApiClient,
    code: str,
    aggregation: str = "COUNT",
    property: str | None = None,
    refs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    data = await api.admin(
        CREATE_METER,
        {
            "input": {
                "code": code,
                "name": code.replace("_", " ").title(),
                "aggregation": aggregation,
                "property": property,
                "providerRefs": refs or [],
            }
        },
    )
    created: dict[str, Any] = data["createMeter"]["meter"]
    return created


async def plan(api: ApiClient, code: str, **fields: Any) -> str:
    body = {
        "code": code,
        "name": code.title(),
        "interval": "MONTH",
        "prices": [{"currency": "USD", "amount": "29.00"}],
        **fields,
    }
    data = await api.admin(CREATE_PLAN, {"input": body})
    plan_id: str = data["createPlan"]["plan"]["id"]
    return plan_id


async def record(
    api: ApiClient, events: list[dict[str, Any]], *, ok: bool = True
) -> dict[str, Any]:
    """recordUsage as admin; returns the payload. ``ok``: assert that it has no userErrors."""
    response = await api.gql(RECORD, {"input": {"events": events}}, admin=True)
    assert response.status == 200, response.body
    assert not response.errors, response.errors
    payload: dict[str, Any] = response.data["recordUsage"]
    if ok:
        assert payload["userErrors"] == [], payload["userErrors"]
    return payload


async def usage(api: ApiClient, meter_code: str, **selector: Any) -> dict[str, Any]:
    variables = {"m": meter_code, **selector}
    data = await api.admin(USAGE, variables)
    summary: dict[str, Any] = data["usage"]
    return summary


class Rows:
    """Direct SQL on the test database for rows other helpers' domains own."""

    def __init__(self, database: TestDatabase) -> None:
        self.url = database.url

    async def execute(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def set_clock(self, now: datetime) -> None:
        """Freeze the test clock at ``now`` (as ``advanceClock`` would, also backwards)."""
        await self.execute(
            "INSERT INTO clock_state (id, now) VALUES (1, $1) "
            "ON CONFLICT (id) DO UPDATE SET now = EXCLUDED.now",
            now,
        )

    async def subscription(
        self,
        customer_id: str,
        plan_id: str,
        *,
        start: datetime,
        end: datetime,
        currency: str = "USD",
        quantity: int = 1,
        status: str = "ACTIVE",
        legacy_duplicate: bool = False,
    ) -> str:
        """``legacy_duplicate``: a second live one of the customer to the plan, as made before
        the rule of one per plan (kept by the migration, outside its unique index)."""
        sub_id = uuid.uuid4()
        await self.execute(
            "INSERT INTO subscriptions (id, customer_id, plan_id, provider, status, currency, "
            "quantity, current_period_start, current_period_end, created_at, updated_at, "
            "legacy_duplicate) VALUES ($1, $2, $3, 'manual', $4, $5, $6, $7, $8, $7, $7, $9)",
            sub_id,
            uuid.UUID(customer_id),
            uuid.UUID(plan_id),
            status,
            currency,
            quantity,
            start,
            end,
            legacy_duplicate,
        )
        return str(sub_id)

    async def invoice_item(
        self,
        subscription_id: str,
        description: str,
        amount_minor: int,
        currency: str = "USD",
        *,
        invoiced_at: datetime | None = None,
        created_at: datetime,
    ) -> None:
        await self.execute(
            "INSERT INTO invoice_items (subscription_id, kind, description, currency, "
            "amount_minor, quantity, invoiced_at, created_at) "
            "VALUES ($1, 'proration', $2, $3, $4, $5, $6, $7)",
            uuid.UUID(subscription_id),
            description,
            currency,
            amount_minor,
            Decimal(1),
            invoiced_at,
            created_at,
        )
