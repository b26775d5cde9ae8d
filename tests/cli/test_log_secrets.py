"""No secret reaches a log line at any level (security issue #11, secrets in logs).

httpx logs every request's full URL at INFO and httpcore its connection trace at DEBUG: an
endpoint URL carrying a token (``?token=…``, ``user:pass@``) would be written to the log. The
conformance suite (``billing_gql.testing.conformance``) scans the Stripe, Polar and SePay fakes'
flows the same way; these tests cover the outgoing webhooks and the provider HTTP client."""

from __future__ import annotations

import http.server
import logging
import threading
from typing import Any

import httpx
import pytest
from billing_helpers import DEV, START, advance, make_customer, make_usd_plan, manual_clock

from billing_gql.plugins.http import HttpClientFactory, redact_log_text, register_secrets
from billing_gql.testing import ApiClient
from billing_gql.testing.fixtures import MakeApi

HOOK_TOKEN = "hooktoken-5f1d9a7c2e"
URL_PASSWORD = "urlpassword-83bc21"
QUERY_KEY = "querykey-0c7d44e1"
REGISTERED = "registered-secret-value-91ae"


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured line as a handler would write it (message and traceback)."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


class _Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(500 if "fail" in self.path else 204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_outgoing_webhook_deliveries_log_no_token(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    """A real delivery to a loopback receiver (httpx and httpcore both log), one answered 500
    (our own warning), and one whose connection fails."""
    caplog.set_level(logging.DEBUG)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    secrets: list[str] = []
    try:
        async with make_api(billing=manual_clock(), outbound=DEV) as api:
            await advance(api, START)
            for url in (
                f"{base}/ok?token={HOOK_TOKEN}",
                f"{base}/fail?token={HOOK_TOKEN}",
                f"http://127.0.0.1:9/closed?token={HOOK_TOKEN}",  # nothing listens on port 9
            ):
                created = await api.admin(
                    """mutation($u: String!) { createWebhookEndpoint(input: {url: $u,
                       events: ["*"]}) { secret } }""",
                    {"u": url},
                )
                secrets.append(created["createWebhookEndpoint"]["secret"])
            await make_usd_plan(api, "logged")
            customer = await make_customer(api, "usr_logged")
            await api.admin(
                """mutation($c: ID!) { createCheckout(input: {customerId: $c,
                   planCode: "logged", provider: "manual"}) { checkout { id } } }""",
                {"c": customer},
            )
            await advance(api, START.replace(minute=1))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    text = log_text(caplog)
    assert "HTTP Request: POST" in text  # httpx did log the deliveries
    assert "httpcore" in text and "127.0.0.1" in text  # and httpcore its trace
    for secret in (HOOK_TOKEN, *secrets, secrets[0].removeprefix("whsec_")):
        assert secret not in text


async def test_provider_http_client_logs_no_credentials(caplog: pytest.LogCaptureFixture) -> None:
    """The client every plugin uses: a key in a query string or in the URL's userinfo, a bearer
    token, and retries (which log too) stay out of the log."""
    caplog.set_level(logging.DEBUG)
    register_secrets([REGISTERED])
    answers = iter([503, 200, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json={"echo": REGISTERED})

    factory = HttpClientFactory(httpx.MockTransport(handler), backoff=0.0, max_retry_wait=0.0)
    async with factory.client(
        base_url="https://api.provider.test", headers={"authorization": f"Bearer {REGISTERED}"}
    ) as client:
        assert (await client.get("/v1/items", params={"api_key": QUERY_KEY})).status_code == 200
        url = f"https://user:{URL_PASSWORD}@api.provider.test/v1/x"
        assert (await client.get(url)).status_code == 200
    logging.getLogger("httpx").info("echo %s and Bearer %s", REGISTERED, REGISTERED)
    text = log_text(caplog)
    assert "HTTP Request: GET https://api.provider.test/v1/items?***" in text
    assert "retrying" in text
    for secret in (QUERY_KEY, URL_PASSWORD, REGISTERED):
        assert secret not in text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("POST https://a.test/h?token=abc123 200", "POST https://a.test/h?*** 200"),
        ("GET https://u:p4ss@a.test/x", "GET https://***@a.test/x"),
        ("Authorization: Bearer abcdef123456", "Authorization: Bearer ***"),
        ("key sk_live_51Habc and whsec_Zm9vYmFy", "key *** and ***"),
        ("session bgcs_Xyz-123_abc", "session ***"),
        ("plain text stays", "plain text stays"),
    ],
)
def test_redact_log_text(line: str, expected: str) -> None:
    assert redact_log_text(line) == expected


async def test_admin_key_and_session_token_stay_out_of_the_log(
    api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    customer = await make_customer(api, "usr_token")
    data = await api.admin(
        "mutation($id: ID!) { createCustomerSession(customerId: $id) { token } }",
        {"id": customer},
    )
    token = data["createCustomerSession"]["token"]
    logging.getLogger("httpx").warning("token=%s, key %s", token, api.admin_key)
    text = log_text(caplog)
    assert token not in text and str(api.admin_key) not in text
