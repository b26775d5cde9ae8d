"""The audit log: every mutation by a key or a customer token, recorded in the same
transaction as its effect, secrets redacted; ``auditLog`` for admins."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from access_helpers import make_key
from billing_helpers import CREATE_CHECKOUT, UPSERT, db_rows, make_customer, make_plan, session_for

from billing_gql.testing import ApiClient, TestDatabase

AUDIT = """query($filter: AuditLogFilter, $first: Int, $after: String) {
  auditLog(filter: $filter, first: $first, after: $after) {
    nodes { id at actorKind actor actorLabel field operationName arguments result errorCodes requestId }
    pageInfo { hasNextPage endCursor } } }"""
RECORD = """mutation Ingest($input: RecordUsageInput!) { recordUsage(input: $input) {
  accepted userErrors { code } } }"""


async def _log(api: ApiClient, **filter: Any) -> list[dict[str, Any]]:
    data = await api.admin(AUDIT, {"filter": filter or None, "first": 100})
    nodes: list[dict[str, Any]] = data["auditLog"]["nodes"]
    return nodes


async def _post(
    api: ApiClient, query: str, variables: dict[str, Any], bearer: str, **headers: str
) -> dict[str, Any]:
    response = await api.http.post(
        "/graphql",
        content=json.dumps({"query": query, "variables": variables}),
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {bearer}",
            **headers,
        },
    )
    body: dict[str, Any] = response.json()
    return body


async def test_a_mutation_is_recorded_with_its_effect(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    key_id, secret = await make_key(api, "ADMIN", name="backend")
    query = "mutation Upsert($input: UpsertCustomerInput!) { upsertCustomer(input: $input) { customer { id } userErrors { code } } }"
    variables = {
        "input": {
            "externalId": "usr_9",
            "email": "ann@example.com",
            "metadata": {"plan": "x", "apiToken": "tok-123", "nested": {"password": "hunter2"}},
        }
    }
    body = await _post(api, query, variables, secret, **{"x-request-id": "req-42"})
    customer_id = body["data"]["upsertCustomer"]["customer"]["id"]
    [entry] = [e for e in await _log(api) if e["field"] == "upsertCustomer"]
    assert entry["actorKind"] == "api_key" and entry["actor"] == key_id
    assert entry["actorLabel"] == secret[:12]
    assert entry["operationName"] == "Upsert" and entry["requestId"] == "req-42"
    assert entry["result"] == "OK" and entry["errorCodes"] == []
    assert entry["arguments"] == {
        "input": {
            "externalId": "usr_9",
            "email": "ann@example.com",
            "metadata": {
                "plan": "x",
                "apiToken": "[redacted]",
                "nested": {"password": "[redacted]"},
            },
        }
    }
    # The same transaction wrote the customer and the audit row.
    rows = await db_rows(
        clean_database.url,
        "SELECT (SELECT xmin::text FROM customers WHERE id = $1::uuid) AS effect, "
        "(SELECT xmin::text FROM audit_log WHERE id = $2::uuid) AS audit",
        customer_id,
        entry["id"],
    )
    assert rows[0]["effect"] == rows[0]["audit"]
    dump = json.dumps(await db_rows(clean_database.url, "SELECT * FROM audit_log"), default=str)
    assert "tok-123" not in dump and "hunter2" not in dump and secret not in dump


@asynccontextmanager
async def _audit_refused(database: TestDatabase) -> AsyncIterator[None]:
    """Every insert into audit_log fails while inside."""
    await db_rows(
        database.url,
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
    )
    await db_rows(
        database.url,
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
    )
    try:
        yield
    finally:
        await db_rows(database.url, "DROP TRIGGER refuse_audit ON audit_log")
        await db_rows(database.url, "DROP FUNCTION refuse_audit()")


async def test_no_effect_without_its_audit_row(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    """A failing audit insert rolls the mutation's effect back with it."""
    async with _audit_refused(clean_database):
        answer = await api.gql(UPSERT, {"input": {"externalId": "usr_x"}}, admin=True)
    assert answer.error_codes == ["INTERNAL_SERVER_ERROR"]
    assert await db_rows(clean_database.url, "SELECT id FROM customers") == []


async def test_results_refusals_and_customers(api: ApiClient) -> None:
    await make_plan(api, "pro")
    customer = await make_customer(api, "usr_1")
    token = await session_for(api, customer)
    # userErrors: their codes.
    bad = await api.gql(
        'mutation { createMeter(input: {code: "", name: "", aggregation: COUNT}) { userErrors { code } } }',
        admin=True,
    )
    assert bad.data["createMeter"]["userErrors"]
    # A key refused for lack of scope is recorded too.
    reader_id, reader = await make_key(api, "READ")
    assert (
        await api.gql('mutation { archivePlan(code: "pro") { userErrors { code } } }', token=reader)
    ).error_codes == ["FORBIDDEN"]
    # A customer token's mutation names the customer; its idempotency key is redacted.
    checkout = await api.gql(
        CREATE_CHECKOUT,
        {
            "input": {
                "customerId": customer,
                "planCode": "pro",
                "provider": "manual",
                "idempotencyKey": "idem-1",
            }
        },
        token=token,
    )
    assert checkout.ok()["createCheckout"]["checkout"]["id"]
    log = await _log(api)
    by_field = {e["field"]: e for e in log}
    assert by_field["createMeter"]["result"] == "USER_ERRORS"
    assert by_field["createMeter"]["errorCodes"] and set(by_field["createMeter"]["errorCodes"]) <= {
        "INVALID_INPUT"
    }
    assert by_field["createMeter"]["actorKind"] == "admin_key"
    assert by_field["createMeter"]["actor"] == "BILLING_GQL_ADMIN_KEYS[0]"
    assert by_field["archivePlan"] | {"id": None, "at": None, "requestId": None} == {
        "id": None,
        "at": None,
        "requestId": None,
        "actorKind": "api_key",
        "actor": reader_id,
        "actorLabel": reader[:12],
        "field": "archivePlan",
        "operationName": None,
        "arguments": {"code": "pro"},
        "result": "ERROR",
        "errorCodes": ["FORBIDDEN"],
    }
    made = by_field["createCheckout"]
    assert made["actorKind"] == "customer" and made["actor"] == customer
    assert made["arguments"]["input"]["idempotencyKey"] == "[redacted]"
    assert made["result"] == "OK"
    # Anonymous mutations have no one to name: not recorded.
    before = len(log)
    assert (await api.gql(UPSERT, {"input": {"externalId": "usr_2"}})).error_codes == [
        "UNAUTHENTICATED"
    ]
    assert len(await _log(api)) == before


async def test_a_usage_batch_commits_with_its_audit_row(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    await make_customer(api, "usr_1")
    await api.admin(
        'mutation { createMeter(input: {code: "calls", name: "Calls", aggregation: COUNT}) { userErrors { code } } }'
    )
    key_id, writer = await make_key(api, "USAGE_WRITE")
    events = [{"id": f"e{i}", "meter": "calls", "externalCustomerId": "usr_1"} for i in range(25)]
    answer = await api.gql(RECORD, {"input": {"events": events}}, token=writer)
    assert answer.ok()["recordUsage"]["accepted"] == 25
    [entry] = await _log(api, field="recordUsage")
    assert entry["actor"] == key_id and entry["operationName"] == "Ingest"
    recorded = entry["arguments"]["input"]["events"]
    assert recorded[:10] == events[:10] and recorded[10:] == ["… 15 more"]
    # One statement stored the batch and its row (no extra round trip).
    same = await db_rows(
        clean_database.url,
        "SELECT DISTINCT e.xmin::text = a.xmin::text AS same FROM usage_events e, audit_log a "
        "WHERE a.id = $1::uuid",
        entry["id"],
    )
    assert same == [{"same": True}]
    # The batch and its row commit together: with the row refused, no event is stored.
    more = [{"id": f"x{i}", "meter": "calls", "externalCustomerId": "usr_1"} for i in range(3)]
    async with _audit_refused(clean_database):
        refused = await api.http.post(
            "/graphql",
            content=json.dumps({"query": RECORD, "variables": {"input": {"events": more}}}),
            headers={"content-type": "application/json", "authorization": f"Bearer {writer}"},
        )
    assert refused.status_code == 200
    assert refused.json()["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    stored = await db_rows(clean_database.url, "SELECT count(*) AS n FROM usage_events")
    assert stored == [{"n": 25}]
    # A repeat is all duplicates: still recorded, nothing else written.
    assert (await api.gql(RECORD, {"input": {"events": events}}, token=writer)).ok()["recordUsage"][
        "accepted"
    ] == 0
    assert len(await _log(api, field="recordUsage")) == 2


async def test_the_audit_log_pages_and_filters(api: ApiClient) -> None:
    key_id, secret = await make_key(api, "ADMIN")
    for i in range(5):
        await _post(api, UPSERT, {"input": {"externalId": f"u{i}"}}, secret)
    await api.admin(UPSERT, {"input": {"externalId": "by-bootstrap"}})
    everything = await _log(api)
    assert [e["field"] for e in everything][:2] == ["upsertCustomer", "upsertCustomer"]
    assert everything == sorted(everything, key=lambda e: e["at"], reverse=True)
    mine = await _log(api, actor=key_id)
    assert len(mine) == 5 and {e["actor"] for e in mine} == {key_id}
    assert await _log(api, actor=secret[:12]) == mine
    assert len(await _log(api, field="createApiKey")) == 1
    middle = mine[2]["at"]
    older = await _log(api, actor=key_id, to=middle)
    assert older == mine[3:]
    assert await _log(api, actor=key_id, **{"from": middle}) == mine[:3]
    first = await api.admin(AUDIT, {"filter": {"actor": key_id}, "first": 2})
    page = first["auditLog"]
    assert [n["id"] for n in page["nodes"]] == [e["id"] for e in mine[:2]]
    assert page["pageInfo"]["hasNextPage"]
    second = await api.admin(
        AUDIT, {"filter": {"actor": key_id}, "first": 2, "after": page["pageInfo"]["endCursor"]}
    )
    assert [n["id"] for n in second["auditLog"]["nodes"]] == [e["id"] for e in mine[2:4]]
    _, reader = await make_key(api, "READ")
    assert (await api.gql(AUDIT, token=reader)).error_codes == ["FORBIDDEN"]


async def test_data_rights_need_the_admin_scope_and_deletion_is_recorded(
    api: ApiClient,
) -> None:
    """exportCustomerData and deleteCustomer are ``admin``-scoped (personal data); a
    deleteCustomer call is in the audit log, refused or done."""
    customer_id = await make_customer(api, "usr_erase", email="eve@example.com")
    _, reader = await make_key(api, "READ", name="analytics")
    export = "query X($id: ID!) { exportCustomerData(customerId: $id) }"
    delete = """mutation Erase($id: ID!) { deleteCustomer(customerId: $id) {
      customer { id deletedAt } userErrors { code } } }"""
    for query in (export, delete):
        body = await _post(api, query, {"id": customer_id}, reader)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"], body
    [refused] = [e for e in await _log(api) if e["field"] == "deleteCustomer"]
    assert refused["actorKind"] == "api_key" and refused["result"] == "ERROR"
    assert refused["errorCodes"] == ["FORBIDDEN"]
    assert (await api.gql(CUSTOMER_EMAIL, {"id": customer_id}, admin=True)).data == {
        "customer": {"email": "eve@example.com"}
    }
    _, operator = await make_key(api, "ADMIN", name="dpo")
    body = await _post(api, delete, {"id": customer_id}, operator)
    assert body["data"]["deleteCustomer"]["customer"]["deletedAt"] is not None
    entries = [e for e in await _log(api, field="deleteCustomer") if e["result"] == "OK"]
    assert [(e["operationName"], e["arguments"]) for e in entries] == [
        ("Erase", {"customerId": customer_id})
    ]


CUSTOMER_EMAIL = "query($id: ID!) { customer(id: $id) { email } }"
