"""billing-gql: a self-hosted billing service with a GraphQL API and pluggable providers.

This module's ``__all__`` is the public plugin API: a provider plugin imports only these names
(and ``billing_gql.testing`` in its tests). Everything else is private and may change.
"""

from billing_gql.errors import (
    NotSupported,
    ProviderError,
    ProviderUnavailable,
    UserInputError,
    WebhookPayloadError,
    WebhookSignatureError,
    WebhookSourceError,
)
from billing_gql.money import MAX_AMOUNT_MINOR, Money, format_minor, parse_major
from billing_gql.plugins.hookspecs import hookimpl, hookspec
from billing_gql.plugins.http import HttpClientFactory, response_time
from billing_gql.plugins.provider import Provider, ProviderContext
from billing_gql.plugins.settings import ProviderSettings
from billing_gql.plugins.types import (
    METADATA_CHECKOUT_ID,
    METADATA_CUSTOMER_ID,
    METADATA_SUBSCRIPTION_ID,
    BankTransferInstructions,
    BillingEvent,
    BillingInterval,
    CheckoutRequest,
    CheckoutSession,
    CustomerInfo,
    DomainEvent,
    EventKind,
    FeatureGrant,
    PaymentInfo,
    PlanChangeRequest,
    PlanInfo,
    PortalRequest,
    ProrationBehavior,
    ProviderGrant,
    ReconcileRequest,
    ReconcileResult,
    RefundInfo,
    StoredDelivery,
    SubscriptionRef,
    SubscriptionSnapshot,
    SubscriptionStatus,
    UsageRecord,
    UsageReportResult,
    WebhookEnvelope,
    WebhookRequest,
)

__version__ = "0.1.0"

__all__ = [
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
