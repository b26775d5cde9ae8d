"""billing-gql-stripe: the Stripe provider plugin for billing-gql.

Modules: :mod:`~billing_gql_stripe.api` (HTTP calls to Stripe), :mod:`~billing_gql_stripe.plugin`
(the provider registered with billing-gql), :mod:`~billing_gql_stripe.webhooks` (signature check
and event mapping), :mod:`~billing_gql_stripe.testing` (a fake Stripe for tests).
"""

__version__ = "0.1.0"
