"""A GraphQL client over HTTP for tests (Litestar's test client underneath)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class GraphQLResponse:
    status: int
    body: dict[str, Any]
    headers: httpx.Headers

    @property
    def data(self) -> Any:
        return self.body.get("data")

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.body.get("errors") or [])

    @property
    def error_codes(self) -> list[str | None]:
        return [(e.get("extensions") or {}).get("code") for e in self.errors]

    def ok(self) -> Any:
        """``data``, asserting there were no errors and no userErrors anywhere at the top."""
        assert self.status == 200, (self.status, self.body)
        assert not self.errors, self.errors
        data = self.body["data"]
        for name, value in (data or {}).items():
            if isinstance(value, dict) and value.get("userErrors"):
                raise AssertionError(f"{name}: {value['userErrors']}")
        return data


class ApiClient:
    """Sends GraphQL (and plain HTTP) to the app under test."""

    def __init__(self, http: httpx.AsyncClient, admin_key: str | None) -> None:
        self.http = http
        self.admin_key = admin_key

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        admin: bool = False,
        accept: str = "application/graphql-response+json",
    ) -> GraphQLResponse:
        """POST a GraphQL request; ``admin=True`` sends the admin key, ``token`` a session."""
        headers = {"content-type": "application/json", "accept": accept}
        bearer = self.admin_key if admin else token
        if bearer is not None:
            headers["authorization"] = f"Bearer {bearer}"
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        response = await self.http.post("/graphql", content=json.dumps(payload), headers=headers)
        return GraphQLResponse(response.status_code, response.json(), response.headers)

    async def admin(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        """Run as admin and return ``data``, asserting success."""
        return (await self.gql(query, variables, admin=True)).ok()

    async def post_webhook(
        self, provider: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """Deliver a webhook to ``/webhooks/{provider}``."""
        return await self.http.post(f"/webhooks/{provider}", content=body, headers=headers)
