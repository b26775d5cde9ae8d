"""Refunds: ``refundPayment`` (reserve, ask the provider or record a refund made outside,
record the outcome); the recording itself is the applier's
(:mod:`billing_gql.applier.refunds`), shared with the provider's refund webhooks."""
