"""A thin client of AcmePay's JSON API: requests, headers and errors, nothing about billing.

- The HTTP client comes from billing-gql (:class:`~billing_gql.HttpClientFactory`): timeouts,
  retries on 429/5xx honouring ``Retry-After``, and the injectable transport tests use. Every
  POST carries an ``Idempotency-Key`` so that those retries (and a later attempt of the same
  operation) can never create a second object.
- Each request goes through :func:`~billing_gql.request_json`: AcmePay's error object
  ``{"error": {"code", "message"}}`` becomes an :class:`AcmePayError` (a
  :class:`~billing_gql.ProviderError` carrying AcmePay's message); a 429 or 5xx that outlived
  the retries, a timeout or a refused connection becomes
  :class:`~billing_gql.ProviderUnavailable`.
- The API key never appears in a log line or an error message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from billing_gql import HttpClientFactory, ProviderError, ProviderUnavailable, request_json

__all__ = ["DEFAULT_API_BASE", "AcmePayApi", "AcmePayError"]

DEFAULT_API_BASE = "https://api.acmepay.example"


class AcmePayError(ProviderError):
    """AcmePay refused a request (a 4xx with its error object)."""

    def __init__(self, message: str, *, status: int, acmepay_code: str | None) -> None:
        super().__init__(message, provider_code=acmepay_code, status=status)
        self.acmepay_code = acmepay_code

    @property
    def missing(self) -> bool:
        """True when AcmePay says the object does not exist."""
        return self.status == 404 or self.acmepay_code == "resource_missing"


class AcmePayApi:
    """The AcmePay endpoints the plugin calls, each one HTTP request."""

    def __init__(
        self,
        http: HttpClientFactory,
        *,
        api_key: str,
        api_base: str = DEFAULT_API_BASE,
        logger: logging.Logger | None = None,
    ) -> None:
        self._log = logger or logging.getLogger("billing_gql.provider.acmepay")
        self._client = http.client(
            base_url=api_base.rstrip("/"),
            headers={"authorization": f"Bearer {api_key}", "accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], datetime]:
        """Call AcmePay; return the decoded object and AcmePay's time of answering.

        :raises AcmePayError: AcmePay refused (4xx).
        :raises ProviderUnavailable: AcmePay could not be reached or kept failing.
        """
        headers: dict[str, str] = {}
        if method == "POST":
            if not idempotency_key:
                raise ValueError("every AcmePay POST needs an idempotency key")
            headers["idempotency-key"] = idempotency_key
        decoded, answered_at = await request_json(
            self._client,
            method,
            path,
            provider="AcmePay",
            refusal=self._refusal,
            logger=self._log,
            json=dict(body) if body is not None else None,
            headers=headers,
        )
        if not isinstance(decoded, dict):
            raise ProviderUnavailable("AcmePay answered with an unexpected body")
        return decoded, answered_at

    @staticmethod
    def _refusal(response: httpx.Response, code: str | None, message: str | None) -> ProviderError:
        status = response.status_code
        if status == 401:
            # Never echo anything about the key itself.
            return AcmePayError(
                "AcmePay rejected the API key (check BILLING_GQL_ACMEPAY_API_KEY)",
                status=status,
                acmepay_code=code,
            )
        return AcmePayError(
            f"AcmePay: {message or f'HTTP {status}'}", status=status, acmepay_code=code
        )

    # -- endpoints -----------------------------------------------------------------------------

    async def create_checkout(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/checkouts``."""
        found, _ = await self.request(
            "POST", "/v1/checkouts", params, idempotency_key=idempotency_key
        )
        return found

    async def get_subscription(
        self, subscription_id: str
    ) -> tuple[dict[str, Any] | None, datetime | None]:
        """``GET /v1/subscriptions/{id}``: the subscription (``None`` when AcmePay has none)
        and AcmePay's time of reading it."""
        try:
            return await self.request("GET", f"/v1/subscriptions/{quote(subscription_id, safe='')}")
        except AcmePayError as exc:
            if exc.missing:
                return None, None
            raise

    async def cancel_subscription(
        self, subscription_id: str, *, at_period_end: bool, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/subscriptions/{id}/cancel``."""
        found, _ = await self.request(
            "POST",
            f"/v1/subscriptions/{quote(subscription_id, safe='')}/cancel",
            {"at_period_end": at_period_end},
            idempotency_key=idempotency_key,
        )
        return found

    async def resume_subscription(
        self, subscription_id: str, *, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/subscriptions/{id}/resume``."""
        found, _ = await self.request(
            "POST",
            f"/v1/subscriptions/{quote(subscription_id, safe='')}/resume",
            {},
            idempotency_key=idempotency_key,
        )
        return found
