"""Property-based fuzzing of every query and mutation in ``schema.graphql`` (schemathesis).

A real ``billing-gql serve`` on the test database, seeded with a plan, a meter, a customer,
a session token and a scoped API key, gets generated operations — with the admin key, with the
customer's session token and with the scoped key (``READ`` + ``USAGE_WRITE``: its operations run,
the others are refused by their scope) — whose arguments come from strategies for our scalars
(``strategies.py``). No answer may be a 5xx, carry an ``INTERNAL_SERVER_ERROR``, or show a Python
repr in a message.

Rate limits stay on (every request is counted in PostgreSQL, keys too) with a limit the run
cannot reach: a 429 would mean the fuzzer stopped testing, so it fails the run with its reason.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from billing_helpers import CREATE_PLAN, SESSION, UPSERT, plan_input, process_env
from hypothesis import given
from strategies import FUZZ, FUZZ_SCOPED, register_scalars

from billing_gql.testing import TestDatabase
from billing_gql.testing.fixtures import ADMIN_KEY
from billing_gql.testing.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
register_scalars()
SCHEMA = schemathesis.graphql.from_path(ROOT / "schema.graphql")
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]

# What a message must never show: a Python repr of a value or an object.
PYTHON_REPR = re.compile(
    r"Decimal\(|datetime\.|UUID\(|<[A-Za-z_.]+ object at 0x|Traceback|\bNone\b is not"
)


class Fuzzed:
    def __init__(self, url: str, tokens: tuple[str, str]) -> None:
        self.url = url
        customer_token, key_secret = tokens
        self.tokens = {"admin": ADMIN_KEY, "customer": customer_token, "scoped": key_secret}


CREATE_KEY = """mutation($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { secret userErrors { code } } }"""


def _seed(url: str) -> tuple[str, str]:
    """A plan, a meter, a customer with a session and a scoped API key; returns the customer's
    session token and the key's secret."""
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}

    def admin(query: str, variables: dict[str, Any]) -> Any:
        body = {"query": query, "variables": variables}
        answer = httpx.post(f"{url}/graphql", content=json.dumps(body), headers=headers)
        data = answer.json()
        assert not data.get("errors"), data
        return data["data"]

    admin(CREATE_PLAN, {"input": plan_input("pro")})
    admin(
        "mutation($i: CreateMeterInput!) { createMeter(input: $i) { userErrors { code } } }",
        {"i": {"code": "api_calls", "name": "API calls", "aggregation": "COUNT"}},
    )
    customer = admin(UPSERT, {"input": {"externalId": "usr_1", "country": "US"}})
    customer_id = customer["upsertCustomer"]["customer"]["id"]
    session = admin(SESSION, {"id": customer_id})
    key = admin(CREATE_KEY, {"input": {"name": "fuzz", "scopes": ["READ", "USAGE_WRITE"]}})
    return str(session["createCustomerSession"]["token"]), str(key["createApiKey"]["secret"])


@pytest.fixture(scope="module")
def fuzzed(billing_database: TestDatabase) -> Iterator[Fuzzed]:
    asyncio.run(billing_database.reset())
    env = process_env(
        billing_database.url,
        BILLING_GQL_PLUGINS="manual",
        BILLING_GQL_MANUAL_PROVIDER="1",
        BILLING_GQL_TEST_CLOCK="1",
        BILLING_GQL_DB_POOL_SIZE="4",
        # Counted (the limiter's statement runs on every request) but never reached.
        BILLING_GQL_RATE_LIMIT="1000000/minute",
    )
    with ServerProcess(env) as server:
        yield Fuzzed(server.url, _seed(server.url))
        crashed = [line for line in server.output if "resolver failed" in line]
    assert not crashed, "\n".join(server.output)


def _messages(value: Any) -> Iterator[str]:
    """Every ``message`` string in a response body (errors and userErrors alike)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "message" and isinstance(item, str):
                yield item
            else:
                yield from _messages(item)
    elif isinstance(value, list):
        for item in value:
            yield from _messages(item)


def check_response(response: Any, sent: Any = None) -> None:
    """The properties every answer keeps, whatever was sent (``sent`` is shown on failure)."""
    assert response.status_code < 500, (response.status_code, response.text, sent)
    assert response.status_code != 429, ("rate-limited: the fuzz server's limit is too low", sent)
    body = response.json()
    codes = [(e.get("extensions") or {}).get("code") for e in body.get("errors") or []]
    assert "INTERNAL_SERVER_ERROR" not in codes, (body, sent)
    for message in _messages(body):
        assert not PYTHON_REPR.search(message), (message, sent)


def _fuzz(operation: Any, fuzzed: Fuzzed, principal: str) -> None:
    headers = {"authorization": f"Bearer {fuzzed.tokens[principal]}"}

    @(FUZZ_SCOPED if principal == "scoped" else FUZZ)
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        check_response(case.call(base_url=f"{fuzzed.url}/graphql", headers=headers), case.body)

    run()


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_admin_fuzz(operation: Any, fuzzed: Fuzzed) -> None:
    _fuzz(operation, fuzzed, "admin")


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_customer_fuzz(operation: Any, fuzzed: Fuzzed) -> None:
    _fuzz(operation, fuzzed, "customer")


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_scoped_key_fuzz(operation: Any, fuzzed: Fuzzed) -> None:
    _fuzz(operation, fuzzed, "scoped")
