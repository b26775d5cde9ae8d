"""The public plugin API is exactly ``billing_gql.__all__``: adding or removing a name is a
deliberate change to this list (and to the plugin guide), never an accident."""

from __future__ import annotations

import billing_gql
import billing_gql.testing

PUBLIC_API = [
    "MAX_AMOUNT_MINOR",
    "METADATA_CHECKOUT_ID",
    "METADATA_CUSTOMER_ID",
    "METADATA_SUBSCRIPTION_ID",
    "BankTransferInstructions",
    "BillingEvent",
    "BillingInterval",
    "CheckoutRequest",
    "CheckoutSession",
    "CustomerInfo",
    "DomainEvent",
    "ErrorCode",
    "EventKind",
    "FeatureGrant",
    "HttpClientFactory",
    "Money",
    "NotSupported",
    "PaymentInfo",
    "PlanChangeRequest",
    "PlanInfo",
    "PortalRequest",
    "ProrationBehavior",
    "Provider",
    "ProviderContext",
    "ProviderError",
    "ProviderGrant",
    "ProviderSettings",
    "ProviderUnavailable",
    "ReconcileRequest",
    "ReconcileResult",
    "RefundInfo",
    "StoredDelivery",
    "SubscriptionRef",
    "SubscriptionSnapshot",
    "SubscriptionStatus",
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
    "hookimpl",
    "hookspec",
    "parse_major",
    "response_time",
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
