"""Outgoing webhooks: endpoint registration, Standard Webhooks signatures, retries with backoff,
and a delivery to a real loopback server."""

from __future__ import annotations

import http.server
import ipaddress
import json
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from billing_helpers import DEV, START, advance, make_customer, make_usd_plan, manual_clock
from standardwebhooks import Webhook, WebhookVerificationError

from billing_gql.events import targets
from billing_gql.events.outgoing_webhooks import MAX_ATTEMPTS, sign
from billing_gql.testing import ApiClient
from billing_gql.testing.database import TestDatabase
from billing_gql.testing.fixtures import MakeApi

CREATE = """mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
  endpoint { id url events enabled } secret userErrors { field message code } } }"""


class Receiver:
    """A fake app endpoint (an httpx transport): answers from a script, records requests."""

    def __init__(self, *answers: int | type[Exception]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, type):
            raise answer("refused", request=request)  # type: ignore[call-arg]
        return httpx.Response(answer, json={"ok": answer < 300})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


async def create_endpoint(api: ApiClient, url: str, events: list[str]) -> dict[str, Any]:
    data = await api.admin(CREATE, {"input": {"url": url, "events": events}})
    payload: dict[str, Any] = data["createWebhookEndpoint"]
    return payload


async def open_checkout(api: ApiClient, name: str) -> tuple[str, datetime]:
    """An OPEN manual checkout bought at the test clock's time: its id and expiry (the
    checkout lifetime, 60 minutes, later)."""
    await make_usd_plan(api, f"plan-{name}")
    customer = await make_customer(api, f"cus-{name}")
    data = await api.admin(
        """mutation($input: CreateCheckoutInput!) { createCheckout(input: $input) {
             checkout { id expiresAt } userErrors { code } } }""",
        {"input": {"customerId": customer, "planCode": f"plan-{name}", "provider": "manual"}},
    )
    found = data["createCheckout"]["checkout"]
    return found["id"], datetime.fromisoformat(found["expiresAt"])


@asynccontextmanager
async def webhook_api(make_api: MakeApi, receiver: Receiver) -> AsyncIterator[ApiClient]:
    async with make_api(
        billing=manual_clock(),
        transports={"webhook_endpoints": receiver.transport()},
        outbound=DEV,
    ) as api:
        await advance(api, START)
        yield api


async def test_create_endpoint_validates_and_needs_admin(api: ApiClient) -> None:
    result = await api.gql(
        CREATE,
        {"input": {"url": "ftp://example.com/x", "events": ["ok.event", "Bad Event", "a..b"]}},
        admin=True,
    )
    payload = result.data["createWebhookEndpoint"]
    assert payload["endpoint"] is None and payload["secret"] is None
    assert sorted((tuple(e["field"]), e["code"]) for e in payload["userErrors"]) == [
        (("input", "events", "1"), "INVALID_INPUT"),
        (("input", "events", "2"), "INVALID_INPUT"),
        (("input", "url"), "INVALID_INPUT"),
    ]
    empty = await api.gql(
        CREATE, {"input": {"url": "https://app.example/hook", "events": []}}, admin=True
    )
    assert [e["field"] for e in empty.data["createWebhookEndpoint"]["userErrors"]] == [
        ["input", "events"]
    ]
    listed = (await api.gql("{ webhookEndpoints { id } }", admin=True)).ok()
    assert listed["webhookEndpoints"] == []  # nothing was written

    anonymous = await api.gql(
        CREATE, {"input": {"url": "https://app.example/hook", "events": ["*"]}}
    )
    assert anonymous.error_codes == ["UNAUTHENTICATED"]


async def test_create_list_delete_endpoint(api: ApiClient) -> None:
    created = await create_endpoint(
        api, "https://app.example/hooks", ["checkout.*", "Subscription.Expired", "checkout.*"]
    )
    assert created["secret"].startswith("whsec_")
    endpoint = created["endpoint"]
    assert endpoint["events"] == ["checkout.*", "subscription.expired"]
    assert endpoint["enabled"] is True
    listed = (await api.gql("{ webhookEndpoints { id url events } }", admin=True)).ok()
    assert listed["webhookEndpoints"] == [
        {"id": endpoint["id"], "url": "https://app.example/hooks", "events": endpoint["events"]}
    ]
    assert "secret" not in json.dumps(listed)  # the secret is shown once only
    delete = (
        "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { endpoint { id } secret "
        "userErrors { code } } }"
    )
    gone = (await api.gql(delete, {"id": endpoint["id"]}, admin=True)).ok()
    assert gone["deleteWebhookEndpoint"]["endpoint"]["id"] == endpoint["id"]
    again = await api.gql(delete, {"id": endpoint["id"]}, admin=True)
    assert again.data["deleteWebhookEndpoint"]["userErrors"] == [{"code": "NOT_FOUND"}]


def test_signature_matches_the_standard_webhooks_library() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"type":"checkout.completed","data":{"a":1}}'
    timestamp = int(datetime.now().timestamp())
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, "evt_1", timestamp, body),
    }
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    tampered = dict(headers, **{"webhook-id": "evt_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, tampered)


async def test_events_reach_matching_endpoints_signed(
    make_api: MakeApi, clean_database: TestDatabase
) -> None:
    receiver = Receiver()
    async with webhook_api(make_api, receiver) as api:
        wanted = await create_endpoint(api, "https://app.example/a", ["checkout.*"])
        await create_endpoint(api, "https://app.example/b", ["subscription.expired"])
        everything = await create_endpoint(api, "https://app.example/c", ["*"])
        checkout_id, expires = await open_checkout(api, "a")
        await advance(api, expires)

        by_url: dict[str, list[httpx.Request]] = {}
        for request in receiver.requests:
            by_url.setdefault(str(request.url), []).append(request)
        assert sorted(by_url) == ["https://app.example/a", "https://app.example/c"]
        for url, created in (
            ("https://app.example/a", wanted),
            ("https://app.example/c", everything),
        ):
            bodies = [
                Webhook(created["secret"]).verify(r.content, dict(r.headers)) for r in by_url[url]
            ]
            assert [b["type"] for b in bodies] == ["checkout.created", "checkout.expired"]
            assert bodies[1]["data"]["status"] == "EXPIRED"
            assert bodies[1]["data"]["checkout_id"] == checkout_id
        # One event, one id, whichever endpoint receives it (receivers dedupe on it).
        assert [r.headers["webhook-id"] for r in by_url["https://app.example/a"]] == [
            r.headers["webhook-id"] for r in by_url["https://app.example/c"]
        ]

        # Delivered once: later ticks send nothing more.
        await advance(api, START + timedelta(days=2))
        assert len(receiver.requests) == 4


async def test_failed_deliveries_retry_with_backoff(
    make_api: MakeApi, clean_database: TestDatabase
) -> None:
    receiver = Receiver(500, httpx.ConnectError, 503, 200)
    async with webhook_api(make_api, receiver) as api:
        created = await create_endpoint(api, "https://app.example/hook", ["checkout.expired"])
        _, first = await open_checkout(api, "b")
        await advance(api, first)
        assert len(receiver.requests) == 1

        # Each retry waits twice as long as the one before (README: 30 s, 1 min, 2 min, …);
        # nothing goes out early.
        due = first
        for attempt, wait in enumerate((30, 60, 120), start=1):
            due += timedelta(seconds=wait)
            await advance(api, due - timedelta(seconds=1))
            assert len(receiver.requests) == attempt
            await advance(api, due)
            assert len(receiver.requests) == attempt + 1
        await advance(api, due + timedelta(days=3))
        assert len(receiver.requests) == 4

        ids = {r.headers["webhook-id"] for r in receiver.requests}
        assert len(ids) == 1  # the same message id on every attempt, for receivers to dedupe
        for request in receiver.requests:
            Webhook(created["secret"]).verify(request.content, dict(request.headers))
        conn = await asyncpg.connect(clean_database.url)
        try:
            row = await conn.fetchrow("SELECT status, attempts, last_status FROM webhook_messages")
        finally:
            await conn.close()
        assert dict(row) == {"status": "delivered", "attempts": 4, "last_status": 200}


async def test_a_message_is_given_up_after_the_last_attempt(
    make_api: MakeApi, clean_database: TestDatabase
) -> None:
    receiver = Receiver(*([500] * (MAX_ATTEMPTS + 5)))
    async with webhook_api(make_api, receiver) as api:
        await create_endpoint(api, "https://app.example/hook", ["checkout.expired"])
        _, now = await open_checkout(api, "c")
        for _ in range(MAX_ATTEMPTS + 3):
            await advance(api, now)
            now += timedelta(days=1)
        assert len(receiver.requests) == MAX_ATTEMPTS
        conn = await asyncpg.connect(clean_database.url)
        try:
            row = await conn.fetchrow("SELECT status, attempts, last_error FROM webhook_messages")
        finally:
            await conn.close()
        assert dict(row) == {"status": "failed", "attempts": MAX_ATTEMPTS, "last_error": "HTTP 500"}


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_delivery_to_a_real_loopback_server(
    make_api: MakeApi, clean_database: TestDatabase
) -> None:
    # A real HTTP server on its own thread (the in-process test client shares this loop).
    handler = type("Hook", (_Hook,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        async with make_api(billing=manual_clock(), outbound=DEV) as api:
            await advance(api, START)
            url = f"http://127.0.0.1:{server.server_address[1]}/billing"
            created = await create_endpoint(api, url, ["checkout.expired"])
            _, expires = await open_checkout(api, "d")
            await advance(api, expires)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert len(handler.received) == 1
    headers, body = handler.received[0]
    payload = Webhook(created["secret"]).verify(body, headers)
    assert payload["type"] == "checkout.expired"


# --- targets: https to public addresses only (SSRF), checked again at delivery -------------

PUBLIC = "93.184.215.14"
"""A global address the fake resolver answers with (nothing is ever sent to it: every test
here delivers through a fake transport)."""


class FakeDns:
    """Replaces the resolver outgoing webhooks use: answers from ``answers``, records asks."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {"app.example": [PUBLIC]}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[tuple[Any, ...]]:
        self.asked.append(host)
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            if host not in self.answers:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            addresses = self.answers[host]
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port, 0, 0) if ":" in a else (a, port),
            )
            for a in addresses
        ]


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    """No test here resolves a name for real."""
    fake = FakeDns()
    monkeypatch.setattr(targets, "getaddrinfo", fake)
    return fake


@pytest.mark.parametrize(
    ("url", "answers"),
    [
        ("http://app.example/hook", []),  # plain http
        ("https://127.0.0.1/hook", []),
        ("https://[::1]/hook", []),
        ("https://169.254.169.254/latest/meta-data", []),  # cloud metadata
        ("https://[::ffff:169.254.169.254]/latest", []),  # the same, IPv4-mapped
        ("https://0.0.0.0/hook", []),
        ("https://internal.example/hook", ["10.1.2.3"]),
        ("https://internal.example/hook", [PUBLIC, "192.168.1.10"]),  # every address counts
        ("https://internal.example/hook", ["169.254.169.254"]),
        ("https://internal.example/hook", ["fd00::5"]),  # unique local
        ("https://internal.example/hook", ["fe80::1"]),  # link-local
        ("https://internal.example/hook", ["100.64.0.7"]),  # shared (carrier-grade NAT)
        ("https://internal.example/hook", ["224.0.0.251"]),  # multicast
        ("https://internal.example/hook", ["240.0.0.1"]),  # reserved
        ("https://internal.example/hook", ["2002:a01:203::1"]),  # 6to4 of 10.1.2.3
        ("https://internal.example/hook", ["64:ff9b::a9fe:a9fe"]),  # NAT64 of 169.254.169.254
        ("https://nowhere.example/hook", []),  # does not resolve
    ],
)
async def test_registration_refuses_internal_targets(
    api: ApiClient, dns: FakeDns, url: str, answers: list[str]
) -> None:
    if answers:
        dns.answers["internal.example"] = answers
    result = await api.gql(CREATE, {"input": {"url": url, "events": ["*"]}}, admin=True)
    payload = result.data["createWebhookEndpoint"]
    assert payload["endpoint"] is None and payload["secret"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        (["input", "url"], "WEBHOOK_TARGET_NOT_ALLOWED")
    ]
    listed = (await api.gql("{ webhookEndpoints { id } }", admin=True)).ok()
    assert listed["webhookEndpoints"] == []


async def test_delivery_checks_again_and_connects_to_the_checked_address(
    make_api: MakeApi, clean_database: TestDatabase, dns: FakeDns
) -> None:
    """DNS rebinding: the name resolved to a public address when registered, and to the cloud
    metadata address later; the later message is not sent anywhere."""
    receiver = Receiver()
    dns.answers["rebind.example"] = [PUBLIC]
    async with make_api(
        billing=manual_clock(), transports={"webhook_endpoints": receiver.transport()}
    ) as api:
        await advance(api, START)
        created = await create_endpoint(api, "https://rebind.example:8443/hook?k=1", ["*"])
        await open_checkout(api, "pin")
        await advance(api, START + timedelta(seconds=1))
        [sent] = receiver.requests
        # Connected to the address that was checked, the name kept for Host and TLS.
        assert str(sent.url) == f"https://{PUBLIC}:8443/hook?k=1"
        assert sent.headers["host"] == "rebind.example:8443"
        assert sent.extensions["sni_hostname"] == "rebind.example"
        Webhook(created["secret"]).verify(sent.content, dict(sent.headers))

        dns.answers["rebind.example"] = ["169.254.169.254"]
        await open_checkout(api, "rebound")
        await advance(api, START + timedelta(seconds=2))
        assert len(receiver.requests) == 1  # nothing sent after the name moved
    conn = await asyncpg.connect(clean_database.url)
    try:
        errors = await conn.fetch(
            "SELECT last_error FROM webhook_messages WHERE status = 'pending' "
            "AND last_error IS NOT NULL"
        )
    finally:
        await conn.close()
    assert [r["last_error"].split(":")[0] for r in errors] == ["WEBHOOK_TARGET_NOT_ALLOWED"]


async def test_delivery_reads_a_bounded_answer_and_follows_no_redirect(
    make_api: MakeApi, clean_database: TestDatabase
) -> None:
    pulled: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(1024):  # 16 MiB offered
            pulled.append(1)
            yield b"x" * 16384

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in endless():
                yield chunk

    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return httpx.Response(200, stream=Endless())
        return httpx.Response(302, headers={"location": "http://169.254.169.254/"})

    async with make_api(
        billing=manual_clock(), transports={"webhook_endpoints": httpx.MockTransport(answer)}
    ) as api:
        await advance(api, START)
        await create_endpoint(api, "https://app.example/hook", ["checkout.created"])
        await open_checkout(api, "big")
        await advance(api, START + timedelta(seconds=1))
        assert len(requests) == 1 and len(pulled) <= 5  # 64 KiB, not 16 MiB
        await open_checkout(api, "moved")
        await advance(api, START + timedelta(seconds=2))
    assert [str(r.url) for r in requests] == [f"https://{PUBLIC}/hook"] * 2  # not followed
    conn = await asyncpg.connect(clean_database.url)
    try:
        rows = await conn.fetch("SELECT status, last_status FROM webhook_messages ORDER BY 2")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("delivered", 200), ("pending", 302)]
