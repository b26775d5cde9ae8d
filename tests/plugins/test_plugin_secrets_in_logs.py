"""A plugin exception carrying the provider's key is redacted in logs too.

The core already blanks a provider's secret settings out of the error texts it stores and shows
(``Checkout.error``, ``WebhookDelivery.error``), but it logged the same exceptions with
``logger.exception``/``exc_info``, whose traceback prints the exception's text unredacted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from billing_helpers import CREATE_CHECKOUT, make_customer, make_plan

from billing_gql import (
    BillingEvent,
    CheckoutRequest,
    CheckoutSession,
    PortalRequest,
    Provider,
    StoredDelivery,
    WebhookEnvelope,
    WebhookRequest,
    hookimpl,
)
from billing_gql.testing.fixtures import MakeApi

KEY = "sk_live_review_secret_4242"


def _leak(key: str) -> RuntimeError:
    # What an HTTP library's error looks like for an API that takes its key in the URL.
    return RuntimeError(f"cannot reach https://api.leaky.test/v1?api_key={key}")


class Leaky(Provider):
    name = "leaky"
    display_name = "Leaky"
    required_settings = ("API_KEY",)
    secret_settings = ("API_KEY",)
    needs_provider_ref = False

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        raise _leak(self.settings["API_KEY"])

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        return WebhookEnvelope(event_id="evt_1", event_type="thing")

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        raise _leak(self.settings["API_KEY"])

    async def create_portal_session(self, request: PortalRequest) -> str:
        raise _leak(self.settings["API_KEY"])


class LeakyPlugin:
    @hookimpl
    def register_providers(self) -> Sequence[type[Provider]]:
        return [Leaky]


DELIVERIES = "{ webhookDeliveries { nodes { status error } } }"


async def test_provider_secrets_stay_out_of_logs(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with make_api(plugins=[LeakyPlugin()], env={"BILLING_GQL_LEAKY_API_KEY": KEY}) as api:
        await make_plan(api)
        customer = await make_customer(api, "ann")
        result = await api.gql(
            CREATE_CHECKOUT,
            {"input": {"customerId": customer, "planCode": "pro", "provider": "leaky"}},
            admin=True,
        )
        payload = result.data["createCheckout"]
        assert payload["checkout"]["status"] == "FAILED"
        assert [e["code"] for e in payload["userErrors"]] == ["PROVIDER_ERROR"]

        response = await api.post_webhook("leaky", b"{}", {})
        assert response.status_code == 200
        deliveries = (await api.admin(DELIVERIES))["webhookDeliveries"]["nodes"]
        assert [d["status"] for d in deliveries] == ["failed"]

        assert KEY not in str(result.body) and KEY not in str(deliveries)
    # The failures were logged with their tracebacks, the key blanked out.
    assert "RuntimeError" in caplog.text and "api_key=***" in caplog.text
    assert KEY not in caplog.text
