"""``billing_gql.testing``: the test kit for billing-gql and for provider plugins.

Enable it in a ``conftest.py`` with one line::

    pytest_plugins = ["billing_gql.testing"]

It gives a database per test run (on ``DATABASE_URL``'s server, or an embedded PostgreSQL),
emptied before each test, an app factory with only the plugins you register, and a GraphQL
client that goes through HTTP, and the provider conformance suite
(:class:`ProviderConformance`) a provider package subclasses to prove its plugin.

:class:`BillingSettings` (what ``make_api(billing=…)`` and
``ProviderConformance.billing_settings`` take) and :class:`ServerProcess` (``billing-gql serve``
as a real process, to test entry-point discovery) are re-exported so that a plugin's tests need
nothing outside this module.
"""

from billing_gql.settings import BillingSettings
from billing_gql.testing.client import ApiClient, GraphQLResponse
from billing_gql.testing.conformance import (
    ConformanceContext,
    Delivery,
    PlanSpec,
    ProviderConformance,
)
from billing_gql.testing.database import TestDatabase
from billing_gql.testing.fixtures import (
    ADMIN_KEY,
    api,
    app_settings,
    billing_database,
    clean_database,
    make_api,
)
from billing_gql.testing.imports import private_imports
from billing_gql.testing.providers import provider_for, run_cli
from billing_gql.testing.server import ServerProcess

__all__ = [
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
