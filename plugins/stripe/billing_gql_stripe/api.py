"""A thin client of Stripe's v1 API: requests, headers and errors, nothing about billing-gql.

- Bodies are form-encoded in bracket notation (:mod:`billing_gql_stripe.forms`).
- ``Authorization: Bearer <key>`` and a pinned ``Stripe-Version`` on every request; every POST
  carries an ``Idempotency-Key`` the caller derives from our ids, so a retried call (by the
  core's HTTP client after a 429/5xx, or by a later attempt of the same operation) cannot
  create a second object.
- Stripe's error object ``{"error": {type, code, message, param}}`` becomes a
  :class:`StripeError` (a :class:`~billing_gql.ProviderError`) carrying Stripe's message; 429
  and 5xx that outlive the core's retries become :class:`~billing_gql.ProviderUnavailable`.
- The API key never appears in a log line or an error message: Stripe's own messages about
  keys are redacted before they travel further.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from billing_gql import HttpClientFactory, ProviderError, ProviderUnavailable, response_time
from billing_gql_stripe.forms import encode, flatten

__all__ = ["DEFAULT_API_BASE", "STRIPE_VERSION", "StripeApi", "StripeError", "redact_keys"]

DEFAULT_API_BASE = "https://api.stripe.com"
STRIPE_VERSION = "2025-03-31.basil"
"""The API version we send and parse. From this version on, billing periods live on
subscription items and an invoice names its subscription under
``parent.subscription_details``; the parsers also accept the older shapes."""

_KEY_PATTERN = re.compile(r"\b(sk|rk|pk)_(test|live)_[A-Za-z0-9*]+|\bwhsec_[A-Za-z0-9*]+")


def redact_keys(text: str, *secrets: str) -> str:
    """``text`` with the given secrets and anything shaped like a Stripe key blanked out."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEY_PATTERN.sub(lambda m: f"{m.group(0).split('_')[0]}_***", text)


class StripeError(ProviderError):
    """Stripe answered with an error object (4xx)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_type: str | None = None,
        stripe_code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, provider_code=stripe_code or error_type, status=status)
        self.error_type = error_type
        self.stripe_code = stripe_code
        self.param = param
        self.request_id = request_id

    @property
    def missing(self) -> bool:
        """True when Stripe says the object does not exist."""
        return self.status == 404 or self.stripe_code == "resource_missing"


def _path_id(value: str) -> str:
    return quote(value, safe="")


class StripeApi:
    """Stripe's endpoints that the plugin uses, each one HTTP call."""

    def __init__(
        self,
        http: HttpClientFactory,
        *,
        api_key: str,
        api_base: str = DEFAULT_API_BASE,
        logger: logging.Logger | None = None,
    ) -> None:
        self._api_key = api_key
        self._log = logger or logging.getLogger("billing_gql.provider.stripe")
        self._client = http.client(
            base_url=api_base.rstrip("/"),
            headers={
                "authorization": f"Bearer {api_key}",
                "stripe-version": STRIPE_VERSION,
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- transport -----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Call Stripe and return the decoded object; raise :class:`StripeError` or
        :class:`~billing_gql.ProviderUnavailable`."""
        body, _ = await self.request_at(method, path, params, idempotency_key=idempotency_key)
        return body

    async def request_at(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], datetime]:
        """Like :meth:`request`, also returning Stripe's time of the answer (its ``Date``
        header, else our clock): the moment a fetched object's state was true."""
        headers: dict[str, str] = {}
        content: str | None = None
        query: list[tuple[str, str | int | float | bool | None]] | None = None
        if method == "POST":
            if not idempotency_key:
                raise ValueError("every Stripe POST needs an idempotency key")
            headers["idempotency-key"] = idempotency_key
            headers["content-type"] = "application/x-www-form-urlencoded"
            content = encode(params or {})
        elif params:
            query = list(flatten(params))
        try:
            response = await self._client.request(
                method, path, content=content, params=query, headers=headers
            )
        except httpx.HTTPError as exc:
            self._log.warning("stripe %s %s failed: %s", method, path, type(exc).__name__)
            raise ProviderUnavailable(
                f"Stripe could not be reached ({type(exc).__name__})"
            ) from None
        request_id = response.headers.get("request-id")
        self._log.debug(
            "stripe %s %s -> %d (request %s)", method, path, response.status_code, request_id
        )
        if response.is_success:
            try:
                body = response.json()
            except ValueError:
                raise ProviderUnavailable("Stripe answered with an unreadable body") from None
            if not isinstance(body, dict):
                raise ProviderUnavailable("Stripe answered with an unexpected body")
            return body, response_time(response)
        raise self._error(response, request_id)

    def _error(self, response: httpx.Response, request_id: str | None) -> ProviderError:
        status = response.status_code
        error: dict[str, Any] = {}
        try:
            payload = response.json()
            if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                error = payload["error"]
        except ValueError:
            pass
        raw = error.get("message")
        message = redact_keys(str(raw), self._api_key) if raw else f"HTTP {status}"
        self._log.info(
            "stripe %s %s answered %d %s (request %s)",
            response.request.method,
            response.request.url.path,
            status,
            error.get("code") or error.get("type") or "",
            request_id,
        )
        if status == 429 or status >= 500:
            return ProviderUnavailable(f"Stripe is unavailable: {message}", status=status)
        return StripeError(
            f"Stripe: {message}",
            status=status,
            error_type=error.get("type"),
            stripe_code=error.get("code"),
            param=error.get("param"),
            request_id=request_id,
        )

    # -- endpoints -----------------------------------------------------------------------------

    async def create_checkout_session(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/checkout/sessions``."""
        return await self.request(
            "POST", "/v1/checkout/sessions", params, idempotency_key=idempotency_key
        )

    async def retrieve_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """``GET /v1/subscriptions/{id}``; ``None`` when Stripe has no such subscription."""
        found, _ = await self.retrieve_subscription_at(subscription_id)
        return found

    async def retrieve_subscription_at(
        self, subscription_id: str
    ) -> tuple[dict[str, Any] | None, datetime | None]:
        """The subscription (or ``None``) and Stripe's time of reading it."""
        try:
            return await self.request_at("GET", f"/v1/subscriptions/{_path_id(subscription_id)}")
        except StripeError as exc:
            if exc.missing:
                return None, None
            raise

    async def update_subscription(
        self, subscription_id: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/subscriptions/{id}``."""
        found, _ = await self.update_subscription_at(
            subscription_id, params, idempotency_key=idempotency_key
        )
        return found

    async def update_subscription_at(
        self, subscription_id: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> tuple[dict[str, Any], datetime]:
        """``POST /v1/subscriptions/{id}`` and Stripe's time of the answer."""
        return await self.request_at(
            "POST",
            f"/v1/subscriptions/{_path_id(subscription_id)}",
            params,
            idempotency_key=idempotency_key,
        )

    async def resume_subscription(
        self, subscription_id: str, *, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/subscriptions/{id}/resume`` (a subscription in status ``paused``)."""
        found, _ = await self.resume_subscription_at(
            subscription_id, idempotency_key=idempotency_key
        )
        return found

    async def resume_subscription_at(
        self, subscription_id: str, *, idempotency_key: str
    ) -> tuple[dict[str, Any], datetime]:
        """``POST /v1/subscriptions/{id}/resume`` and Stripe's time of the answer."""
        return await self.request_at(
            "POST",
            f"/v1/subscriptions/{_path_id(subscription_id)}/resume",
            {"billing_cycle_anchor": "unchanged"},
            idempotency_key=idempotency_key,
        )

    async def cancel_subscription(self, subscription_id: str) -> dict[str, Any]:
        """``DELETE /v1/subscriptions/{id}``: cancel now (DELETE is safe to retry)."""
        found, _ = await self.cancel_subscription_at(subscription_id)
        return found

    async def cancel_subscription_at(self, subscription_id: str) -> tuple[dict[str, Any], datetime]:
        """``DELETE /v1/subscriptions/{id}`` and Stripe's time of the answer."""
        return await self.request_at("DELETE", f"/v1/subscriptions/{_path_id(subscription_id)}")

    async def create_portal_session(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/billing_portal/sessions``."""
        return await self.request(
            "POST", "/v1/billing_portal/sessions", params, idempotency_key=idempotency_key
        )

    async def create_meter_event(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/billing/meter_events``."""
        return await self.request(
            "POST", "/v1/billing/meter_events", params, idempotency_key=idempotency_key
        )

    async def list_invoice_payments(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``GET /v1/invoice_payments`` (first page)."""
        body = await self.request("GET", "/v1/invoice_payments", params)
        data = body.get("data")
        return [p for p in data if isinstance(p, dict)] if isinstance(data, list) else []
