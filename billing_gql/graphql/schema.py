"""Assembles every domain's Query and Mutation into the one schema, and prints its SDL."""

from __future__ import annotations

from functools import lru_cache

import strawberry
from strawberry.tools import merge_types

from billing_gql.graphql.fast.entitlements import entitlement_fast_path
from billing_gql.graphql.fast.usage import record_usage_fast_path
from billing_gql.graphql.fastpaths import Detector
from billing_gql.graphql.live import CheckoutSubscription
from billing_gql.graphql.scalars import SCALAR_OVERRIDES
from billing_gql.graphql.types.access import AccessMutation, AccessQuery
from billing_gql.graphql.types.catalog import CatalogMutation, CatalogQuery
from billing_gql.graphql.types.checkout import CheckoutMutation, CheckoutQuery
from billing_gql.graphql.types.clock import ClockMutation
from billing_gql.graphql.types.customers import (
    CustomerMutation,
    CustomerQuery,
    DataRightsMutation,
    DataRightsQuery,
)
from billing_gql.graphql.types.entitlements import EntitlementQuery
from billing_gql.graphql.types.invoices import InvoiceQuery
from billing_gql.graphql.types.payments import PaymentMutation, PaymentQuery
from billing_gql.graphql.types.provider_webhooks import WebhookMutation, WebhookQuery
from billing_gql.graphql.types.providers import ProviderQuery
from billing_gql.graphql.types.refunds import RefundMutation
from billing_gql.graphql.types.subscriptions import SubscriptionMutation, SubscriptionQuery
from billing_gql.graphql.types.usage import MeterMutation, MeterQuery, UsageMutation, UsageQuery
from billing_gql.graphql.types.webhook_endpoints import (
    WebhookEndpointMutation,
    WebhookEndpointQuery,
)

QUERIES: tuple[type, ...] = (
    CatalogQuery,
    ProviderQuery,
    CustomerQuery,
    DataRightsQuery,
    MeterQuery,
    SubscriptionQuery,
    CheckoutQuery,
    EntitlementQuery,
    PaymentQuery,
    InvoiceQuery,
    WebhookQuery,
    WebhookEndpointQuery,
    UsageQuery,
    AccessQuery,
)
MUTATIONS: tuple[type, ...] = (
    CatalogMutation,
    MeterMutation,
    CustomerMutation,
    DataRightsMutation,
    CheckoutMutation,
    SubscriptionMutation,
    PaymentMutation,
    RefundMutation,
    WebhookMutation,
    ClockMutation,
    WebhookEndpointMutation,
    UsageMutation,
    AccessMutation,
)
SUBSCRIPTIONS: tuple[type, ...] = (CheckoutSubscription,)
"""Merged into ``SubscriptionRoot`` (``Subscription`` is the billing object's name)."""
FAST_PATHS: tuple[Detector, ...] = (record_usage_fast_path, entitlement_fast_path)
"""Detectors the /graphql endpoint tries on each new document (see ``graphql.fastpaths``)."""


@lru_cache(maxsize=1)
def build_schema() -> strawberry.Schema:
    """The schema (built once per process)."""
    query = merge_types("Query", QUERIES)
    mutation = merge_types("Mutation", MUTATIONS)
    subscription = merge_types("SubscriptionRoot", SUBSCRIPTIONS)
    return strawberry.Schema(
        query=query,
        mutation=mutation,
        subscription=subscription,
        scalar_overrides=SCALAR_OVERRIDES,
    )


def export_sdl() -> str:
    """The SDL as committed in ``schema.graphql``."""
    return build_schema().as_str().rstrip("\n") + "\n"
