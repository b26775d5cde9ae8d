"""Helpers of the access tests: API keys made through the API."""

from __future__ import annotations

from typing import Any

from billing_gql.testing import ApiClient

CREATE_KEY = """mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) {
  apiKey { id name scopes prefix expiresAt createdAt lastUsedAt revokedAt }
  secret userErrors { field message code } } }"""


async def make_key(api: ApiClient, *scopes: str, name: str = "k", **extra: Any) -> tuple[str, str]:
    """(id, secret) of a new key with ``scopes`` (GraphQL enum names: READ, USAGE_WRITE, …)."""
    data = await api.admin(CREATE_KEY, {"input": {"name": name, "scopes": list(scopes), **extra}})
    payload = data["createApiKey"]
    return payload["apiKey"]["id"], payload["secret"]
