"""billing-gql-sepay: the SePay provider plugin for billing-gql (Vietnamese bank transfers).

The buyer transfers money to the merchant's bank account with a payment reference in the memo
(a VietQR code carries account, amount and memo); SePay reports every transfer on the account
by webhook, and its user API lists them for reconciliation.

Modules: :mod:`~billing_gql_sepay.plugin` (the provider registered with billing-gql),
:mod:`~billing_gql_sepay.references` (payment references: making and finding them),
:mod:`~billing_gql_sepay.transfers` (webhook and API transactions → normalized events),
:mod:`~billing_gql_sepay.api` (the user API v2 client), :mod:`~billing_gql_sepay.testing`
(a fake SePay for tests).
"""

__version__ = "0.1.0"
