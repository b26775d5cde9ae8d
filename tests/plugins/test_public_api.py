"""The public plugin API is exactly ``billing_gql.__all__``: adding or removing a name is a
deliberate change to this list (and to the plugin guide), never an accident."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

import billing_gql
import billing_gql.testing

PUBLIC_API = [
    "MAX_AMOUNT_MINOR",
    "METADATA_CHECKOUT_ID",
    "METADATA_CUSTOMER_ID",
    "METADATA_REFUND_ID",
    "METADATA_SUBSCRIPTION_ID",
    "RETRY_AFTER",
    "BankTransferInstructions",
    "BillingEvent",
    "BillingInterval",
    "CheckoutRequest",
    "CheckoutSession",
    "CustomerInfo",
    "DisputeInfo",
    "DomainEvent",
    "ErrorCode",
    "EventKind",
    "FeatureGrant",
    "HttpClientFactory",
    "LazyClient",
    "Money",
    "NotSupported",
    "OurIds",
    "PaymentInfo",
    "PlanChangeRequest",
    "PlanInfo",
    "PortalRequest",
    "ProrationBehavior",
    "Provider",
    "ProviderContext",
    "ProviderError",
    "ProviderGrant",
    "ProviderInvoice",
    "ProviderInvoiceLine",
    "ProviderSettings",
    "ProviderUnavailable",
    "ReconcileRequest",
    "ReconcileResult",
    "RefundInfo",
    "RefundRequest",
    "RefundResult",
    "StoredDelivery",
    "SubscriptionRef",
    "SubscriptionSnapshot",
    "SubscriptionStatus",
    "UsageChargeInfo",
    "UsageRecord",
    "UsageReportResult",
    "UserInputError",
    "WebhookEnvelope",
    "WebhookPayloadError",
    "WebhookRequest",
    "WebhookSignatureError",
    "WebhookSourceError",
    "__version__",
    "format_minor",
    "handler_for",
    "hookimpl",
    "hookspec",
    "metadata_of",
    "money_from_minor",
    "operation_key",
    "our_ids",
    "our_metadata",
    "parse_major",
    "provider_subscription_id",
    "redact_secrets",
    "request_json",
    "reread_subscriptions",
    "response_time",
    "retry_after",
    "subscription_updated",
    "webhook_json",
]

TEST_KIT = [
    "ADMIN_KEY",
    "ApiClient",
    "BillingSettings",
    "ConformanceContext",
    "Delivery",
    "GraphQLResponse",
    "PlanSpec",
    "ProviderConformance",
    "ServerProcess",
    "TestDatabase",
    "api",
    "app_settings",
    "billing_database",
    "clean_database",
    "make_api",
    "private_imports",
    "provider_for",
    "run_cli",
]


def test_the_public_plugin_api_is_pinned() -> None:
    assert billing_gql.__all__ == PUBLIC_API


def test_every_public_name_resolves() -> None:
    for name in billing_gql.__all__:
        assert getattr(billing_gql, name) is not None, name
    for name in billing_gql.testing.__all__:
        assert getattr(billing_gql.testing, name) is not None, name


def test_the_test_kit_api_is_pinned() -> None:
    assert billing_gql.testing.__all__ == TEST_KIT


def test_star_import_gives_exactly_the_public_api() -> None:
    namespace: dict[str, object] = {}
    exec("from billing_gql import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(PUBLIC_API)


# --- the provider plumbing every plugin shares ---------------------------------------------


def _checkout_request(metadata: dict[str, str]) -> billing_gql.CheckoutRequest:
    return billing_gql.CheckoutRequest(
        checkout_id="chk_1",
        purpose="new",
        customer=billing_gql.CustomerInfo(
            id="cus_1", external_id="ext_1", email=None, name=None, country=None
        ),
        plan=billing_gql.PlanInfo(
            id="pln_1",
            code="pro",
            name="Pro",
            interval=billing_gql.BillingInterval.MONTH,
            interval_count=1,
            trial_days=0,
            provider_ref="price_1",
        ),
        amount=billing_gql.Money(1000, "USD"),
        quantity=1,
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
        idempotency_key="key_1",
        metadata=metadata,
    )


def test_our_ids_travel_in_metadata_and_come_back() -> None:
    sent = billing_gql.our_metadata(_checkout_request({"source": "web"}))
    assert sent == {
        "source": "web",
        billing_gql.METADATA_CHECKOUT_ID: "chk_1",
        billing_gql.METADATA_CUSTOMER_ID: "cus_1",
    }
    back = billing_gql.our_ids(billing_gql.metadata_of({"id": "sub_9", "metadata": sent}))
    assert back == billing_gql.OurIds("chk_1", "cus_1", None)
    assert back.checkout_id == "chk_1" and back.subscription_id is None
    assert billing_gql.metadata_of({"metadata": "not an object"}) == {}
    assert billing_gql.our_ids({billing_gql.METADATA_CHECKOUT_ID: 7}) == (None, None, None)
    assert billing_gql.our_ids({billing_gql.METADATA_CUSTOMER_ID: ""}).customer_id is None


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1999, "usd", billing_gql.Money(1999, "USD")),
        (0, "VND", billing_gql.Money(0, "VND")),
        (True, "usd", None),
        (19.99, "usd", None),
        ("1999", "usd", None),
        (1999, None, None),
    ],
)
def test_money_from_minor(amount: object, currency: object, expected: object) -> None:
    assert billing_gql.money_from_minor(amount, currency) == expected


@pytest.mark.parametrize(
    ("text", "secrets", "keep_kind", "expected"),
    [
        ("key sk_live_51Habc and whsec_Zm9v", (), False, "key *** and ***"),
        ("key sk_test_****1234 or rk_live_x", (), True, "key sk_*** or rk_***"),
        ("use polar_oat_abc_123 instead", (), True, "use polar_oat_*** instead"),
        (
            "token s3cr3t-value was revoked",
            ("s3cr3t-value", None, ""),
            False,
            "token *** was revoked",
        ),
        ("plain text stays", ("",), False, "plain text stays"),
    ],
)
def test_redact_secrets(
    text: str, secrets: tuple[str | None, ...], keep_kind: bool, expected: str
) -> None:
    assert billing_gql.redact_secrets(text, secrets, keep_kind=keep_kind) == expected


def test_retry_after_reads_the_named_headers_as_seconds_or_a_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert billing_gql.RETRY_AFTER == ("retry-after",)
    assert billing_gql.retry_after(httpx.Response(429, headers={"Retry-After": "2"})) == 2.0
    dated = billing_gql.retry_after(httpx.Response(429, headers={"retry-after": later}))
    assert dated is not None and 100 < dated <= 120
    past = format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)
    assert billing_gql.retry_after(httpx.Response(429, headers={"retry-after": past})) == 0.0
    v1 = httpx.Response(429, headers={"x-sepay-userapi-retry-after": "3", "retry-after": "junk"})
    assert billing_gql.retry_after(v1) is None
    assert billing_gql.retry_after(v1, ("retry-after", "x-sepay-userapi-retry-after")) == 3.0
    epoch = str(int(datetime.now(UTC).timestamp()) + 60)
    reset = billing_gql.retry_after(
        httpx.Response(429, headers={"x-ratelimit-reset": epoch}), ("x-ratelimit-reset",)
    )
    assert reset is not None and 50 < reset <= 60


async def test_a_client_retries_on_the_headers_it_names_and_hands_back_long_waits() -> None:
    answers = [
        httpx.Response(429, headers={"x-wait": "2"}),
        httpx.Response(503),
        httpx.Response(200, json={}),
        httpx.Response(429, headers={"x-wait": "600"}),
    ]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def factory_sleep(seconds: float) -> None:
        raise AssertionError("the client's own sleep is used")

    factory = billing_gql.HttpClientFactory(
        httpx.MockTransport(lambda request: answers.pop(0)), sleep=factory_sleep
    )
    async with factory.client(
        base_url="https://api.test",
        retry_after_headers=("x-wait",),
        backoff=0.0,
        max_retry_wait=60.0,
        cap_wait=False,
        sleep=sleep,
    ) as client:
        assert (await client.get("/things")).status_code == 200
        assert waits == [2.0, 0.0]
        assert (await client.get("/things")).status_code == 429  # 600 s: not waited for
        assert waits == [2.0, 0.0] and answers == []


async def test_a_safe_request_is_retried_after_a_read_timeout_an_unsafe_one_is_not() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) in (1, 3):
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, json={})

    async def sleep(seconds: float) -> None:
        return None

    factory = billing_gql.HttpClientFactory(httpx.MockTransport(handler), sleep=sleep)
    async with factory.client(base_url="https://api.test") as client:
        assert (await client.get("/things")).status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/things", json={})
    assert calls == ["GET", "GET", "POST"]


def _json_client(*answers: httpx.Response | Exception) -> httpx.AsyncClient:
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(seconds: float) -> None:
        return None

    factory = billing_gql.HttpClientFactory(
        httpx.MockTransport(handler), sleep=sleep, max_retries=0
    )
    return factory.client(base_url="https://api.test")


async def test_request_json_maps_answers_to_objects_and_errors() -> None:
    date = "Sun, 22 Nov 2026 10:00:00 GMT"
    async with _json_client(
        httpx.Response(200, json={"id": "x"}, headers={"date": date}),
        httpx.Response(404, json={"error": {"code": "resource_missing", "message": "No such x"}}),
        httpx.Response(400, json={"detail": "bad"}),
        httpx.Response(503, text="down"),
        httpx.Response(200, text="<html>"),
        httpx.ConnectError("refused"),
    ) as client:
        body, at = await billing_gql.request_json(client, "GET", "/x", provider="Acme")
        assert body == {"id": "x"} and at == datetime(2026, 11, 22, 10, tzinfo=UTC)
        with pytest.raises(billing_gql.ProviderError) as refused:
            await billing_gql.request_json(client, "GET", "/x", provider="Acme")
        assert not isinstance(refused.value, billing_gql.ProviderUnavailable)
        assert refused.value.message == "Acme: No such x"
        assert (refused.value.status, refused.value.provider_code) == (404, "resource_missing")

        def refusal(
            response: httpx.Response, code: str | None, message: str | None
        ) -> billing_gql.ProviderError:
            return billing_gql.ProviderError(f"{response.status_code} {code} {message}")

        with pytest.raises(billing_gql.ProviderError, match=r"^400 None bad$"):
            await billing_gql.request_json(client, "POST", "/x", provider="Acme", refusal=refusal)
        with pytest.raises(billing_gql.ProviderUnavailable, match="Acme is unavailable: HTTP 503"):
            await billing_gql.request_json(client, "GET", "/x", provider="Acme")
        with pytest.raises(billing_gql.ProviderUnavailable, match="unreadable body"):
            await billing_gql.request_json(client, "GET", "/x", provider="Acme")
        with pytest.raises(billing_gql.ProviderUnavailable, match=r"could not be reached \(Conn"):
            await billing_gql.request_json(client, "GET", "/x", provider="Acme")
