"""Property-based fuzzing of every provider webhook route (and the raw ``/graphql`` body).

Hypothesis sends arbitrary bytes, headers and JSON to ``POST /webhooks/{provider}`` for each
installed provider (Stripe, Polar, SePay, AcmePay, the test fakes, the built-in manual one and
an unknown name):

- without a valid signature: never a 5xx, and not one row of any table changes;
- with a valid signature (each provider's own scheme) on arbitrary JSON: never a 5xx — a
  delivery is stored and applied or kept as failed, or the body is refused with 400.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import fakes
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import FUZZ, json_values

import billing_gql_acmepay.plugin
import billing_gql_polar.plugin
import billing_gql_sepay.plugin
import billing_gql_stripe.plugin
from billing_gql.settings import BillingSettings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import MakeApi
from billing_gql_acmepay.testing import FakeAcmePay
from billing_gql_polar.testing import FakePolar
from billing_gql_sepay.testing import FakeSePay
from billing_gql_stripe.testing import FakeStripe

STRIPE = FakeStripe()
POLAR = FakePolar()
SEPAY = FakeSePay()
ACME = FakeAcmePay()
ROUTES = ["stripe", "polar", "sepay", "acmepay", "fakepay", "fakebank", "manual", "nosuch"]


@pytest.fixture
async def app(make_api: MakeApi) -> AsyncIterator[ApiClient]:
    env = {
        **STRIPE.env(),
        **POLAR.env(),
        **SEPAY.env(api=False),
        **ACME.env(),
        **fakes.FAKE_ENV,
    }
    async with make_api(
        plugins=[
            billing_gql_stripe.plugin,
            billing_gql_polar.plugin,
            billing_gql_sepay.plugin,
            billing_gql_acmepay.plugin,
            fakes.FakePlugin(),
        ],
        env=env,
        transports={
            "stripe": STRIPE.transport(),
            "polar": POLAR.transport(),
            "sepay": SEPAY.transport(),
            "acmepay": ACME.transport(),
        },
        billing=BillingSettings(manual_provider=True),
    ) as client:
        yield client


async def row_counts(database: TestDatabase) -> dict[str, int]:
    """The number of rows of every table of the database (one statement)."""
    conn = await asyncpg.connect(database.url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        sql = " UNION ALL ".join(
            f"SELECT '{t['tablename']}' AS t, count(*) AS n FROM \"{t['tablename']}\""
            for t in tables
        )
        return {row["t"]: row["n"] for row in await conn.fetch(sql)}
    finally:
        await conn.close()


HEADER_NAMES = st.sampled_from(
    [
        "stripe-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "authorization",
        "acmepay-signature",
        "acmepay-timestamp",
        "x-fake-signature",
        "content-type",
        "x-forwarded-for",
        "content-length-x",
        "x-request-id",
    ]
)
HEADER_VALUES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
    st.sampled_from(
        [
            "t=1,v1=00",
            "v1,AAAA",
            "Apikey ",
            "Apikey wrong",
            "Bearer x",
            "application/json",
            "t=99999999999,v1=" + "0" * 64,
            "v1=" + "f" * 64,
            "msg_1",
            "0",
            "-1",
            "1e99",
        ]
    ),
)
BODIES = st.one_of(
    st.binary(max_size=2048),
    json_values().map(lambda v: json.dumps(v).encode()),
    st.text(max_size=200).map(str.encode),
)


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    body=BODIES,
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=6),
)
async def test_unsigned_deliveries_change_nothing(
    app: ApiClient,
    clean_database: TestDatabase,
    route: str,
    body: bytes,
    headers: dict[str, str],
) -> None:
    before = await row_counts(clean_database)
    response = await app.post_webhook(route, body, headers)
    assert response.status_code < 500, response.text
    assert response.status_code in (401, 403, 404, 413), (response.status_code, response.text)
    assert await row_counts(clean_database) == before


def signed(route: str, body: bytes) -> dict[str, str]:
    """The headers that make ``body`` a genuine delivery to ``route``."""
    now = int(time.time())
    if route == "stripe":
        return {"stripe-signature": STRIPE.sign(body, timestamp=now)}
    if route == "polar":
        return POLAR.sign_headers(body, f"msg_{uuid.uuid4().hex}", timestamp=now)
    if route == "sepay":
        return {"authorization": f"Apikey {SEPAY.api_key}"}
    if route == "acmepay":
        return ACME.sign(body, timestamp=now)
    if route == "fakepay":
        return fakes.sign(body)
    return {"authorization": f"Apikey {fakes.BANK_KEY}"}


def _event_like(route: str) -> st.SearchStrategy[Any]:
    """JSON shaped like the route's events (an object with an id and a type), with any data."""
    keys = st.sampled_from(
        [
            "id",
            "type",
            "data",
            "object",
            "transferAmount",
            "transferType",
            "code",
            "content",
            "referenceCode",
            "transactionDate",
            "amount",
            "currency",
            "metadata",
            "status",
            "created",
            "customer",
            "subscription",
            "timestamp",
            "event_id",
            "checkout_id",
        ]
    )
    scalars = st.one_of(
        st.text(max_size=30),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.none(),
        st.booleans(),
        st.floats(allow_nan=False),
        st.sampled_from(
            [
                "checkout.completed",
                "customer.subscription.updated",
                "subscription.updated",
                "order.paid",
                "in",
            ]
        ),
    )
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)
        ),
        max_leaves=20,
    )
    return st.fixed_dictionaries(
        {"id": st.one_of(st.text(min_size=1, max_size=20), st.integers())}, optional={"x": values}
    ).flatmap(lambda base: st.dictionaries(keys, values, max_size=6).map(lambda d: {**base, **d}))


@FUZZ
@given(
    route=st.sampled_from(["stripe", "polar", "sepay", "acmepay", "fakepay", "fakebank"]),
    data=st.data(),
)
async def test_signed_deliveries_never_fail_the_server(
    app: ApiClient, route: str, data: st.DataObject
) -> None:
    payload = data.draw(st.one_of(_event_like(route), json_values()))
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json", **signed(route, body)}
    response = await app.post_webhook(route, body, headers)
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 202, 204, 400), (response.status_code, response.text)


@FUZZ
@given(
    body=BODIES,
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", ""]
    ),
    accept=st.sampled_from(
        ["", "*/*", "application/graphql-response+json", "text/html", "application/json;q=0"]
    ),
)
async def test_raw_graphql_bodies_never_fail_the_server(
    app: ApiClient, body: bytes, content_type: str, accept: str
) -> None:
    headers = {"content-type": content_type, "accept": accept}
    response = await app.http.post("/graphql", content=body, headers=headers)
    assert response.status_code < 500, response.text
    payload = response.json()
    assert "INTERNAL_SERVER_ERROR" not in json.dumps(payload), payload
