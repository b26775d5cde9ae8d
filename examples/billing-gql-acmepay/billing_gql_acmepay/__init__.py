"""billing-gql-acmepay: the AcmePay provider plugin for billing-gql.

Modules: :mod:`~billing_gql_acmepay.plugin` (the provider registered with billing-gql),
:mod:`~billing_gql_acmepay.api` (HTTP calls to AcmePay), :mod:`~billing_gql_acmepay.webhooks`
(signature check and event mapping), :mod:`~billing_gql_acmepay.mapping` (AcmePay objects →
normalized values), :mod:`~billing_gql_acmepay.testing` (a fake AcmePay for tests).
"""

__version__ = "0.1.0"
