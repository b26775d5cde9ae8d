"""HTTP routes other than GraphQL (inbound provider webhooks)."""
