"""GET /metrics after traffic, its token, the request id, and JSON logs carrying the request id
into the worker's jobs."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import fakes
import httpx
from billing_helpers import make_customer, make_usd_plan, process_env
from prometheus_client.parser import text_string_to_metric_families

from billing_gql.settings import BillingSettings, ObservabilitySettings, Settings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import ADMIN_KEY, MakeApi
from billing_gql.testing.server import ServerProcess

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Series:
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return series


async def scrape(api: ApiClient, token: str | None = None) -> Series:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = await api.http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_operations_webhooks_and_read_the_pool(make_api: MakeApi) -> None:
    async with make_api(
        plugins=[fakes.FakePlugin()],
        env=fakes.FAKE_ENV,
        billing=BillingSettings(manual_provider=True),
    ) as api:
        before = await scrape(api)
        await make_usd_plan(api)
        await make_customer(api)
        assert (await api.gql("{ plans { code } }")).ok()
        assert (await api.gql("{ nosuchfield }")).status == 400
        forbidden = await api.gql("{ webhookDeliveries { nodes { id } } }")
        assert forbidden.errors
        await api.post_webhook("fakepay", b"{}", {"x-fake-signature": "nope"})
        await api.post_webhook("nosuch", b"{}", {})
        after = await scrape(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "billing_gql_graphql_requests_total"
    assert delta(requests, field="plans", type="query", outcome="ok") == 1
    assert delta(requests, field="createPlan", type="mutation", outcome="ok") == 1
    assert delta(requests, field="upsertCustomer", type="mutation", outcome="ok") == 1
    assert delta(requests, field="webhookDeliveries", type="query", outcome="error") == 1
    assert delta(requests, field="(invalid)", type="none", outcome="error") == 1
    assert delta("billing_gql_graphql_request_duration_seconds_count", field="plans") == 1
    deliveries = "billing_gql_webhook_deliveries_total"
    assert delta(deliveries, provider="fakepay", status="bad_signature") == 1
    assert delta(deliveries, provider="unknown", status="unknown_provider") == 1
    # Read at scrape time: this app's pool (max 5 in the test settings), the queue, the outbox.
    assert value(after, "billing_gql_db_pool_connections", state="max") == 5
    assert ("billing_gql_db_pool_connections", (("state", "in_use"),)) in after
    assert ("billing_gql_queue_jobs", (("status", "todo"),)) in after
    assert ("billing_gql_outgoing_webhooks_pending", ()) in after


async def test_metrics_need_the_token_when_one_is_set(
    make_api: MakeApi, app_settings: Settings
) -> None:
    settings = replace(app_settings, observability=ObservabilitySettings(metrics_token="m-tok"))
    async with make_api(settings=settings) as api:
        assert (await api.http.get("/metrics")).status_code == 401
        wrong = await api.http.get("/metrics", headers={"authorization": "Bearer other"})
        assert wrong.status_code == 401
        assert "billing_gql_graphql_requests_total" in str(await scrape(api, "m-tok"))


async def test_request_id_is_echoed_or_made(api: ApiClient) -> None:
    given = await api.http.get("/healthz", headers={"x-request-id": "req-123.abc"})
    assert given.headers["x-request-id"] == "req-123.abc"
    made = await api.http.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    # A header that could break a log line is not echoed: a fresh id replaces it.
    odd = await api.http.get("/healthz", headers={"x-request-id": "a b\tc"})
    assert odd.headers["x-request-id"] != "a b\tc"
    graphql = await api.http.post(
        "/graphql",
        content=json.dumps({"query": "{ plans { code } }"}),
        headers={"content-type": "application/json", "x-request-id": "gql-1"},
    )
    assert graphql.headers["x-request-id"] == "gql-1"


def test_json_logs_carry_the_request_id_into_the_worker(clean_database: TestDatabase) -> None:
    """A request that enqueues work (an event for an outgoing webhook endpoint nudges the
    worker): the worker's lines about that job carry the request's id; /metrics counts the
    failed delivery (the endpoint is a closed loopback port)."""
    env = process_env(
        clean_database.url,
        BILLING_GQL_LOG_FORMAT="json",
        BILLING_GQL_MANUAL_PROVIDER="1",
        BILLING_GQL_ALLOW_PRIVATE_WEBHOOK_TARGETS="1",
        BILLING_GQL_WORKER_TICK_SECONDS="60",
    )
    admin = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
    with ServerProcess(env, args=()) as server:

        def gql(query: str, request_id: str) -> dict[str, object]:
            response = httpx.post(
                f"{server.url}/graphql",
                content=json.dumps({"query": query}),
                headers={**admin, "x-request-id": request_id},
            )
            assert response.headers["x-request-id"] == request_id
            body: dict[str, object] = response.json()
            assert not body.get("errors"), body
            return body

        gql(
            'mutation { createWebhookEndpoint(input: {url: "http://127.0.0.1:9/hook", '
            'events: ["*"]}) { userErrors { code } } }',
            "setup-1",
        )
        gql(
            'mutation { createPlan(input: {code: "pro", name: "Pro", interval: MONTH, '
            'prices: [{currency: "USD", amount: "9.00"}]}) { userErrors { code } } }',
            "setup-2",
        )
        created = gql(
            'mutation { upsertCustomer(input: {externalId: "u1"}) { customer { id } } }', "setup-3"
        )
        customer_id = created["data"]["upsertCustomer"]["customer"]["id"]  # type: ignore[index]
        # checkout.created goes to the endpoint: the outbox nudges the worker with this id.
        gql(
            f'mutation {{ createCheckout(input: {{customerId: "{customer_id}", planCode: "pro", '
            'provider: "manual"}) { userErrors { code } } }',
            "rq-77",
        )
        lines: list[dict[str, object]] = []
        for _ in range(300):
            lines = [json.loads(line) for line in list(server.output) if line.startswith("{")]
            if any(
                entry["request_id"] == "rq-77" and "attempt 1 failed" in str(entry["message"])
                for entry in lines
            ):
                break
            time.sleep(0.1)
        worker_lines = [e for e in lines if e["request_id"] == "rq-77"]
        assert any("attempt 1 failed" in str(e["message"]) for e in worker_lines), lines
        assert {"time", "level", "logger", "message", "request_id"} <= set(worker_lines[0])
        scraped = parse(httpx.get(f"{server.url}/metrics").text)
    assert value(scraped, "billing_gql_outgoing_webhook_deliveries_total", result="failed") >= 1
    # Every line before "listening on" (and after) is JSON when the format is json.
    assert all(line.startswith("{") or line.startswith("listening on") for line in server.output)
