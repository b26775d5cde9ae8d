"""Who bills a plan's usage charges, decided from the provider's declaration
(``charges_renewals``, ``report_usage``, ``usage_charge_refs``), never by name: push providers
need nothing, a provider that renews subscriptions needs the meter's reference (and, with
``usage_charge_refs``, the charge's own), one that takes no usage cannot sell the plan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from billing_helpers import create_checkout, make_customer, make_usd_plan, meter

from billing_gql import (
    BillingEvent,
    CheckoutRequest,
    CheckoutSession,
    Provider,
    StoredDelivery,
    UsageRecord,
    UsageReportResult,
    WebhookEnvelope,
    WebhookRequest,
    hookimpl,
)
from billing_gql.settings import BillingSettings, Route
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import MakeApi


class _Card(Provider):
    required_settings = ()
    needs_provider_ref = False
    charges_renewals = True

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        Cards.requests.append(request)
        return CheckoutSession(provider_checkout_id=f"s_{request.checkout_id}", url="https://p/x")

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        return WebhookEnvelope(event_id="x")

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        return []


class MeteredCard(_Card):
    """Bills usage through one metered price per charge (as Stripe does)."""

    name = "meteredcard"
    usage_charge_refs = True

    async def report_usage(self, records: Sequence[UsageRecord]) -> UsageReportResult:
        return UsageReportResult(accepted=len(records))


class PlainCard(_Card):
    """Renews subscriptions but takes no usage."""

    name = "plaincard"


class Cards:
    requests: list[CheckoutRequest] = []

    @hookimpl
    def register_providers(self) -> Sequence[type[Provider]]:
        return [MeteredCard, PlainCard]


@pytest.fixture
async def api(make_api: MakeApi, clean_database: TestDatabase) -> AsyncIterator[ApiClient]:
    Cards.requests = []
    billing = BillingSettings(manual_provider=True, routes=(Route("*", "meteredcard"),))
    async with make_api(plugins=[Cards()], billing=billing) as client:
        yield client


def charge() -> dict[str, object]:
    return {"meter": "api_calls", "model": "PER_UNIT", "currency": "USD", "unitAmount": "0.01"}


async def setup(api: ApiClient, *, meter_ref: bool, charge_ref: bool) -> str:
    refs = [{"provider": "meteredcard", "ref": "api.call"}, {"provider": "plaincard", "ref": "a"}]
    await meter(api, "api_calls", refs=refs if meter_ref else [])
    metered = {**charge(), "providerRefs": [{"provider": "meteredcard", "ref": "mp_1"}]}
    await make_usd_plan(api, "metered", charges=[metered if charge_ref else charge()])
    return await make_customer(api, "usr_1")


async def test_a_push_provider_needs_no_reference(api: ApiClient) -> None:
    customer = await setup(api, meter_ref=False, charge_ref=False)
    payload = await create_checkout(api, customerId=customer, planCode="metered", provider="manual")
    assert payload["userErrors"] == []


async def test_the_charge_and_its_meter_reach_the_provider(api: ApiClient) -> None:
    customer = await setup(api, meter_ref=True, charge_ref=True)
    payload = await create_checkout(api, customerId=customer, planCode="metered")  # routed
    assert payload["userErrors"] == []
    [request] = Cards.requests
    [info] = request.plan.usage_charges
    assert (info.meter_code, info.meter_ref, info.provider_ref) == ("api_calls", "api.call", "mp_1")


@pytest.mark.parametrize(("meter_ref", "charge_ref"), [(False, True), (True, False)])
async def test_a_missing_reference_is_refused_and_routing_skips_the_provider(
    api: ApiClient, clean_database: TestDatabase, meter_ref: bool, charge_ref: bool
) -> None:
    customer = await setup(api, meter_ref=meter_ref, charge_ref=charge_ref)
    named = await create_checkout(
        api, customerId=customer, planCode="metered", provider="meteredcard"
    )
    [error] = named["userErrors"]
    assert error["code"] == "PROVIDER_REF_MISSING" and error["field"] == ["input", "planCode"]
    assert '"api_calls"' in error["message"]
    routed = await create_checkout(api, customerId=customer, planCode="metered")
    assert [e["code"] for e in routed["userErrors"]] == ["NO_PROVIDER"]
    assert Cards.requests == []


async def test_a_card_provider_without_usage_cannot_sell_usage(api: ApiClient) -> None:
    customer = await setup(api, meter_ref=True, charge_ref=True)
    payload = await create_checkout(
        api, customerId=customer, planCode="metered", provider="plaincard"
    )
    [error] = payload["userErrors"]
    assert error["code"] == "NOT_SUPPORTED" and '"api_calls"' in error["message"]
    assert Cards.requests == []
