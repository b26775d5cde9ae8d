"""The table registry (composition root): the Piccolo app holding every table of billing-gql and
its committed migrations (in ``billing_gql/db/migrations``)."""

from __future__ import annotations

import os

from piccolo.conf.apps import AppConfig

from billing_gql.catalog.tables import (
    Plan,
    PlanAccess,
    PlanFeature,
    PlanPrice,
    PlanProviderRef,
    UsageCharge,
)
from billing_gql.checkout.tables import Checkout
from billing_gql.clock.tables import ClockState
from billing_gql.customers.tables import Customer, CustomerProviderAccount, CustomerSession
from billing_gql.entitlements.tables import ProviderGrant, ProviderGrantFeature
from billing_gql.events.tables import WebhookEndpoint, WebhookMessage
from billing_gql.payments.tables import Payment
from billing_gql.subscriptions.tables import (
    InvoiceItem,
    ReconcileState,
    Subscription,
    TrialRedemption,
)
from billing_gql.usage.tables import (
    Meter,
    MeterProviderRef,
    UsageEvent,
    UsageOutbox,
    UsageThreshold,
)
from billing_gql.webhooks.tables import WebhookDelivery

TABLES = [
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
    UsageEvent,
    UsageOutbox,
    UsageThreshold,
    WebhookDelivery,
    ClockState,
    WebhookEndpoint,
    WebhookMessage,
    ProviderGrant,
    ProviderGrantFeature,
    ReconcileState,
]

APP_CONFIG = AppConfig(
    app_name="billing_gql",
    migrations_folder_path=os.path.join(os.path.dirname(__file__), "db", "migrations"),
    table_classes=TABLES,
    migration_dependencies=[],
    commands=[],
)
