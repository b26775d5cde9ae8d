"""GraphQL documents and small helpers shared by the core's tests: the catalog, customers and
checkouts over GraphQL, usage meters and events, the test clock, rows straight from the
database, a runtime on the test database, and the environment of real ``billing-gql``
processes (run them with the kit's :class:`~billing_gql.testing.ServerProcess`).

Subscriptions and invoice items the usage tests need are written with SQL (:class:`Rows`):
they belong to the subscription engine, and those tests only need their rows to exist.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from billing_gql.runtime import Runtime
from billing_gql.settings import BillingSettings, OutboundSettings, Settings
from billing_gql.testing import ADMIN_KEY, ApiClient, TestDatabase

USER_ERRORS = "userErrors { field message code }"

CREATE_PLAN = f"""mutation($input: CreatePlanInput!) {{ createPlan(input: $input) {{
  plan {{ id code }} {USER_ERRORS} }} }}"""

UPSERT = f"""mutation($input: UpsertCustomerInput!) {{ upsertCustomer(input: $input) {{
  customer {{ id externalId }} {USER_ERRORS} }} }}"""

SESSION = """mutation($id: ID!) { createCustomerSession(customerId: $id) { token } }"""

SUBSCRIPTION_FIELDS = """id status provider providerSubscriptionId currency quantity
  currentPeriodStart currentPeriodEnd trialEnd cancelAtPeriodEnd canceledAt endedAt
  plan { code } customer { id } pendingPlan { code } pendingPlanAt renewedUntil
  renewalCheckout { id status purpose amount { amount currency } }"""

CHECKOUT_FIELDS = f"""id status provider purpose url expiresAt error quantity
  amount {{ amount currency }} amountPaid {{ amount currency }}
  customer {{ id externalId }} plan {{ code }}
  subscription {{ {SUBSCRIPTION_FIELDS} }}
  bankTransfer {{ bankCode accountNumber accountName reference qrCodeUrl
                  amount {{ amount currency }} }}"""

CREATE_CHECKOUT = f"""mutation($input: CreateCheckoutInput!) {{ createCheckout(input: $input) {{
  checkout {{ {CHECKOUT_FIELDS} }} {USER_ERRORS} }} }}"""

COMPLETE_MANUAL = f"""mutation($id: ID!) {{ completeManualCheckout(checkoutId: $id) {{
  checkout {{ {CHECKOUT_FIELDS} }} {USER_ERRORS} }} }}"""

CHECKOUT = f"""query($id: ID!) {{ checkout(id: $id) {{ {CHECKOUT_FIELDS} }} }}"""

SUBSCRIPTION = f"""query($id: ID!) {{ subscription(id: $id) {{ {SUBSCRIPTION_FIELDS} }} }}"""

ENTITLEMENT = """query($c: ID, $e: String, $f: String!) {
  entitlement(customerId: $c, externalCustomerId: $e, feature: $f) {
    feature enabled limit used remaining } }"""

ENTITLEMENTS = """query($c: ID) { entitlements(customerId: $c) {
  feature enabled limit used remaining } }"""

CREATE_METER = f"""mutation($input: CreateMeterInput!) {{ createMeter(input: $input) {{
  meter {{ code name aggregation property providerRefs {{ provider ref currency }} }}
  {USER_ERRORS} }} }}"""

RECORD = f"""mutation($input: RecordUsageInput!) {{ recordUsage(input: $input) {{
  accepted duplicates {USER_ERRORS} }} }}"""

USAGE = """query($c: ID, $x: String, $m: String!, $from: DateTime, $to: DateTime) {
  usage(customerId: $c, externalCustomerId: $x, meter: $m, from: $from, to: $to) {
    meter value from to } }"""

PREVIEW = """query($id: ID!) { invoicePreview(subscriptionId: $id) {
  currency periodStart periodEnd
  lines { description quantity amount { amount currency } }
  subtotal { amount currency } total { amount currency } } }"""

ADVANCE = f"""mutation($to: DateTime!) {{ advanceClock(to: $to) {{ now {USER_ERRORS} }} }}"""

START = datetime(2031, 1, 15, 10, 0, tzinfo=UTC)
"""Tests first move the test clock here (it starts at the wall time of its first use)."""

DEV = OutboundSettings(allow_private_webhook_targets=True)
"""Development settings: outgoing webhooks may reach loopback receivers and fake hosts (not
resolved), as the tests' fake transports and local servers need."""

USD_ONLY: dict[str, Any] = {"prices": [{"currency": "USD", "amount": "29.00"}], "features": []}
"""A plan input's prices and features for :func:`make_usd_plan`."""


def plan_input(code: str = "pro", **extra: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": code.title(),
        "interval": "MONTH",
        "prices": [
            {"currency": "USD", "amount": "30.00"},
            {"currency": "VND", "amount": "300000"},
            {"currency": "JPY", "amount": "3000"},
        ],
        "features": [{"feature": "seats", "limit": "5"}, {"feature": "sso"}],
        **extra,
    }


async def make_plan(api: ApiClient, code: str = "pro", **extra: Any) -> dict[str, Any]:
    data = await api.admin(CREATE_PLAN, {"input": plan_input(code, **extra)})
    plan: dict[str, Any] = data["createPlan"]["plan"]
    return plan


async def make_customer(api: ApiClient, external_id: str = "usr_1", **fields: Any) -> str:
    data = await api.admin(UPSERT, {"input": {"externalId": external_id, **fields}})
    return str(data["upsertCustomer"]["customer"]["id"])


async def make_usd_plan(api: ApiClient, code: str = "pro", **extra: Any) -> dict[str, Any]:
    """A plan priced 29.00 USD only, without features (unless ``extra`` gives some)."""
    return await make_plan(api, code, **{**USD_ONLY, **extra})


async def usd_plan_id(api: ApiClient, code: str = "pro", **extra: Any) -> str:
    """The id of a new :func:`make_usd_plan`."""
    return str((await make_usd_plan(api, code, **extra))["id"])


def manual_clock(**extra: Any) -> BillingSettings:
    """Billing settings with the manual provider and the test clock."""
    return BillingSettings(manual_provider=True, test_clock=True, **extra)


async def session_for(api: ApiClient, customer_id: str) -> str:
    data = await api.admin(SESSION, {"id": customer_id})
    return str(data["createCustomerSession"]["token"])


async def create_checkout(api: ApiClient, **input: Any) -> dict[str, Any]:
    """Create a checkout as admin and return the payload (checkout + userErrors)."""
    result = await api.gql(CREATE_CHECKOUT, {"input": input}, admin=True)
    assert result.status == 200 and not result.errors, result.body
    payload: dict[str, Any] = result.data["createCheckout"]
    return payload


async def checkout_ok(api: ApiClient, **input: Any) -> dict[str, Any]:
    payload = await create_checkout(api, **input)
    assert payload["userErrors"] == [], payload
    checkout: dict[str, Any] = payload["checkout"]
    return checkout


async def complete(api: ApiClient, checkout_id: str) -> dict[str, Any]:
    data = await api.admin(COMPLETE_MANUAL, {"id": checkout_id})
    checkout: dict[str, Any] = data["completeManualCheckout"]["checkout"]
    return checkout


async def subscribe(
    api: ApiClient, customer_id: str, plan_code: str = "pro", **input: Any
) -> dict[str, Any]:
    """Buy ``plan_code`` through the manual provider; return the new subscription."""
    checkout = await checkout_ok(
        api, customerId=customer_id, planCode=plan_code, provider="manual", **input
    )
    done = await complete(api, checkout["id"])
    assert done["status"] == "COMPLETED"
    subscription: dict[str, Any] = done["subscription"]
    return subscription


async def entitlement(api: ApiClient, customer_id: str, feature: str) -> dict[str, Any]:
    data = await api.admin(ENTITLEMENT, {"c": customer_id, "f": feature})
    value: dict[str, Any] = data["entitlement"]
    return value


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


async def set_clock(db_url: str, when: datetime) -> None:
    """Set the stored test clock, also backwards (every process on the database reads it)."""
    await _fetch(
        db_url,
        "INSERT INTO clock_state (id, now) VALUES (1, $1) "
        "ON CONFLICT (id) DO UPDATE SET now = EXCLUDED.now",
        when,
    )


async def advance(api: ApiClient, to: datetime) -> datetime:
    """``advanceClock(to:)``: the test clock moves there, running what falls due on the way."""
    data = await api.admin(ADVANCE, {"to": to.isoformat()})
    assert data["advanceClock"]["userErrors"] == []
    return iso(data["advanceClock"]["now"])


async def _fetch(db_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def db_rows(db_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows straight from the database (for state GraphQL does not show)."""
    return [dict(r) for r in await _fetch(db_url, sql, *args)]


@asynccontextmanager
async def runtime_for(
    settings: Settings,
    billing: BillingSettings | None = None,
    env: dict[str, str] | None = None,
    **options: Any,
) -> AsyncIterator[Runtime]:
    """A runtime in the test's own event loop on the test database (as a worker process runs
    one). Requests through the test client run one at a time; this one runs concurrently."""
    settings = replace(
        settings,
        billing=billing or settings.billing,
        database=replace(settings.database, pool_max_size=10),
    )
    if env is not None:
        settings = replace(settings, plugins=replace(settings.plugins, env=env))
    rt = await Runtime.start(settings, apply_migrations=False, **options)
    try:
        yield rt
    finally:
        await rt.close()


CANCEL = f"""mutation($input: CancelSubscriptionInput!) {{ cancelSubscription(input: $input) {{
  subscription {{ {SUBSCRIPTION_FIELDS} }} {USER_ERRORS} }} }}"""

RESUME = f"""mutation($id: ID!) {{ resumeSubscription(subscriptionId: $id) {{
  subscription {{ {SUBSCRIPTION_FIELDS} }} {USER_ERRORS} }} }}"""

PAUSE = f"""mutation($id: ID!) {{ pauseSubscription(subscriptionId: $id) {{
  subscription {{ {SUBSCRIPTION_FIELDS} }} {USER_ERRORS} }} }}"""

CHANGE = f"""mutation($input: ChangeSubscriptionPlanInput!) {{
  changeSubscriptionPlan(input: $input) {{
    subscription {{ {SUBSCRIPTION_FIELDS} }} prorationAmount {{ amount currency }} effectiveAt
    {USER_ERRORS} }} }}"""

PORTAL = f"""mutation($id: ID!, $url: String) {{ createPortalSession(customerId: $id,
  returnUrl: $url) {{ url {USER_ERRORS} }} }}"""


class StatementCounter:
    """An asyncpg query logger that collects the SQL statements of every connection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statements: list[str] = []

    def __call__(self, record: object) -> None:
        query = str(getattr(record, "query", ""))
        # Not ours: the pool's reset on release, and asyncpg's one-time type introspection
        # when a connection first meets a type (a per-connection cache, not per row).
        if any(mark in query for mark in ("pg_advisory_unlock_all", "typeinfo_tree", "'jit'")):
            return
        with self.lock:
            self.statements.append(query)

    def take(self) -> list[str]:
        with self.lock:
            taken, self.statements = self.statements, []
        return taken


# --- usage ----------------------------------------------------------------------------------


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

    async def execute(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await _fetch(self.url, sql, *args)

    async def set_clock(self, now: datetime) -> None:
        """Freeze the test clock at ``now`` (as ``advanceClock`` would, also backwards)."""
        await set_clock(self.url, now)

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


# --- real processes -------------------------------------------------------------------------


def process_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a billing-gql process on the test database (for ServerProcess)."""
    env = {
        "DATABASE_URL": database_url,
        "BILLING_GQL_ADMIN_KEYS": ADMIN_KEY,
        "BILLING_GQL_PLUGINS": "manual",
        "BILLING_GQL_DB_POOL_SIZE": "3",
    }
    env.update(extra)
    return env


def http_api(url: str) -> ApiClient:
    """An :class:`ApiClient` on a real server at ``url``."""
    return ApiClient(httpx.AsyncClient(base_url=url, timeout=30), ADMIN_KEY)
