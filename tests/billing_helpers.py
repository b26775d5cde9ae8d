"""GraphQL documents and small helpers shared by the billing engine's tests."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from billing_gql.runtime import Runtime
from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import ApiClient

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
    """Set the stored test clock (every process on the database reads it)."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "INSERT INTO clock_state (id, now) VALUES (1, $1) "
            "ON CONFLICT (id) DO UPDATE SET now = EXCLUDED.now",
            when,
        )
    finally:
        await conn.close()


async def advance(api: ApiClient, to: datetime) -> datetime:
    """``advanceClock(to:)``: the test clock moves there, running what falls due on the way."""
    data = await api.admin(
        "mutation($to: DateTime!) { advanceClock(to: $to) { now userErrors { code } } }",
        {"to": to.isoformat()},
    )
    assert data["advanceClock"]["userErrors"] == []
    return iso(data["advanceClock"]["now"])


async def db_rows(db_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows straight from the database (for state GraphQL does not show)."""
    conn = await asyncpg.connect(db_url)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


@asynccontextmanager
async def runtime_for(
    settings: Settings,
    billing: BillingSettings,
    env: dict[str, str] | None = None,
    **options: Any,
) -> AsyncIterator[Runtime]:
    """A runtime in the test's own event loop on the test database (as a worker process runs
    one). Requests through the test client run one at a time; this one runs concurrently."""
    settings = replace(
        settings, billing=billing, database=replace(settings.database, pool_max_size=10)
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
