"""The table registry (composition root): the Piccolo app holding every table of billing-gql and
its committed migrations (in ``billing_gql/db/migrations``)."""

from __future__ import annotations

import os

from piccolo.conf.apps import AppConfig

from billing_gql.store.access import ApiKey, AuditEntry, RateLimitCounter
from billing_gql.store.catalog import (
    Plan,
    PlanAccess,
    PlanFeature,
    PlanPrice,
    PlanProviderRef,
    UsageCharge,
)
from billing_gql.store.checkout import Checkout
from billing_gql.store.clock import ClockState
from billing_gql.store.customers import Customer, CustomerProviderAccount, CustomerSession
from billing_gql.store.entitlements import ProviderGrant, ProviderGrantFeature
from billing_gql.store.invoices import (
    Invoice,
    InvoiceLine,
    InvoiceNumberCounter,
    UsageBilled,
    UsagePeriodClose,
)
from billing_gql.store.payments import Payment
from billing_gql.store.provider_webhooks import WebhookDelivery
from billing_gql.store.refunds import Refund
from billing_gql.store.subscriptions import (
    InvoiceItem,
    ReconcileState,
    Subscription,
    TrialRedemption,
)
from billing_gql.store.usage import (
    Meter,
    MeterProviderRef,
    UsageEvent,
    UsageEventId,
    UsageOutbox,
    UsageRollup,
    UsageRollupState,
    UsageThreshold,
)
from billing_gql.store.webhook_endpoints import WebhookEndpoint, WebhookMessage

TABLES = [
    ApiKey,
    AuditEntry,
    RateLimitCounter,
    Customer,
    CustomerSession,
    CustomerProviderAccount,
    Meter,
    MeterProviderRef,
    Plan,
    PlanPrice,
    PlanFeature,
    UsageCharge,
    PlanProviderRef,
    PlanAccess,
    Subscription,
    TrialRedemption,
    InvoiceItem,
    Checkout,
    Payment,
    Refund,
    UsageEvent,
    UsageEventId,
    UsageRollup,
    UsageRollupState,
    UsageOutbox,
    UsageThreshold,
    WebhookDelivery,
    ClockState,
    WebhookEndpoint,
    WebhookMessage,
    ProviderGrant,
    ProviderGrantFeature,
    ReconcileState,
    InvoiceNumberCounter,
    Invoice,
    InvoiceLine,
    UsagePeriodClose,
    UsageBilled,
]

APP_CONFIG = AppConfig(
    app_name="billing_gql",
    migrations_folder_path=os.path.join(os.path.dirname(__file__), "db", "migrations"),
    table_classes=TABLES,
    migration_dependencies=[],
    commands=[],
)
