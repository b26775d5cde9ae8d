"""What the fuzzers found, one test per class of input (docs: README "Hostile input").

Each was a 5xx or an INTERNAL_SERVER_ERROR; each is now refused where it enters, for every
field of its kind, with a coded error and nothing written.
"""

from __future__ import annotations

import json
from typing import Any

import fakes
import pytest
from billing_helpers import Rows, make_customer

from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import MakeApi

UNSTORABLE = ["a\x00b", "\ud800", "x\udfffy"]


async def _post(api: ApiClient, query: str, variables: dict[str, Any]) -> Any:
    body = json.dumps({"query": query, "variables": variables})
    response = await api.http.post(
        "/graphql",
        content=body,
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {api.admin_key}",
        },
    )
    return response


@pytest.mark.parametrize("text", UNSTORABLE)
async def test_entitlement_fast_path_refuses_unstorable_strings(api: ApiClient, text: str) -> None:
    query = "query($c: String!, $f: String!) { entitlement(externalCustomerId: $c, feature: $f) { enabled } }"
    response = await _post(api, query, {"c": text, "f": "seats"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INVALID_INPUT"], body


@pytest.mark.parametrize("text", UNSTORABLE)
async def test_mutation_strings_refuse_unstorable_text(api: ApiClient, text: str) -> None:
    query = (
        "mutation($i: UpsertCustomerInput!) { upsertCustomer(input: $i) { userErrors { code } } }"
    )
    response = await _post(api, query, {"i": {"externalId": "usr_x", "email": text}})
    body = response.json()
    assert response.status_code == 200, body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INVALID_INPUT"], body
    literal = 'mutation { upsertCustomer(input: {externalId: "a\\u0000"}) { userErrors { code } } }'
    response = await _post(api, literal, {})
    assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


@pytest.mark.parametrize("text", UNSTORABLE)
async def test_json_metadata_refuses_unstorable_text(api: ApiClient, text: str) -> None:
    query = (
        "mutation($i: UpsertCustomerInput!) { upsertCustomer(input: $i) { userErrors { code } } }"
    )
    response = await _post(api, query, {"i": {"externalId": "usr_x", "metadata": {"k": [text]}}})
    body = response.json()
    assert response.status_code == 200, body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INVALID_INPUT"], body


@pytest.mark.parametrize("text", UNSTORABLE)
async def test_usage_fast_path_refuses_unstorable_text(api: ApiClient, text: str) -> None:
    await make_customer(api)
    query = "mutation($e: [UsageEventInput!]!) { recordUsage(events: $e) { accepted userErrors { code } } }"
    event = {"id": text, "meter": "api_calls", "externalCustomerId": "usr_1"}
    response = await _post(api, query, {"e": [event]})
    body = response.json()
    assert response.status_code == 200, body
    assert "INTERNAL_SERVER_ERROR" not in json.dumps(body), body


@pytest.mark.parametrize(
    "event_id", ["x" * 256, "a\x00b", "\ud800", "  "], ids=["long", "nul", "surrogate", "blank"]
)
async def test_signed_delivery_with_an_unstorable_event_id_is_refused(
    make_api: MakeApi, clean_database: TestDatabase, event_id: str
) -> None:
    """A genuine signature on an envelope the inbox cannot store (the fuzzer's fakebank and
    SePay ids come from the body): 400, nothing stored — was a 503 and a logged traceback."""
    async with make_api(plugins=[fakes.FakePlugin()], env=fakes.FAKE_ENV) as app:
        body = json.dumps({"id": event_id, "amount": 100, "reference": "X"}).encode()
        headers = {"authorization": f"Apikey {fakes.BANK_KEY}", "content-type": "application/json"}
        response = await app.post_webhook("fakebank", body, headers)
        assert response.status_code == 400, response.text
    assert await Rows(clean_database).execute("SELECT id FROM webhook_deliveries") == []


async def test_messages_quote_amounts_without_python_reprs(api: ApiClient) -> None:
    query = "mutation($i: CreatePlanInput!) { createPlan(input: $i) { userErrors { field message code } } }"
    variables = {
        "i": {
            "code": "p",
            "name": "P",
            "interval": "MONTH",
            "prices": [{"currency": "USD", "amount": "29.999"}, {"currency": "QQQ", "amount": "1"}],
        }
    }
    errors = (await api.gql(query, variables, admin=True)).data["createPlan"]["userErrors"]
    assert errors == [
        {
            "field": ["input", "prices", "0", "amount"],
            "message": '"29.999" has more precision than USD allows',
            "code": "INVALID_AMOUNT",
        },
        # One error per bad field: the unknown currency is not reported again at its amount.
        {
            "field": ["input", "prices", "1", "currency"],
            "message": 'unknown currency "QQQ"',
            "code": "INVALID_CURRENCY",
        },
    ]
