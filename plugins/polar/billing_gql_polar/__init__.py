"""billing-gql-polar: the Polar provider plugin for billing-gql.

Modules: :mod:`~billing_gql_polar.api` (HTTP calls to Polar), :mod:`~billing_gql_polar.plugin`
(the provider registered with billing-gql), :mod:`~billing_gql_polar.webhooks` (Standard
Webhooks signature check and event mapping), :mod:`~billing_gql_polar.mapping` (Polar objects
as normalized values), :mod:`~billing_gql_polar.testing` (a fake Polar for tests).
"""

__version__ = "0.1.0"
