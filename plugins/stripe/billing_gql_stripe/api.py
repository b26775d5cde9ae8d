"""Stripe's v1 API through the official ``stripe`` SDK, nothing about billing-gql.

- Every call goes through :class:`stripe.StripeClient` (its ``*_async`` methods): the SDK
  encodes the parameters, sends ``Authorization``, the pinned ``Stripe-Version``
  (:data:`STRIPE_VERSION`, the one place it is set) and the ``Idempotency-Key`` the caller
  derives from our ids, so a retried call cannot create a second object.
- The SDK's HTTP goes through the core's HTTP client (:class:`HttpxTransport`, a
  :class:`stripe.HTTPClient`): our timeouts and our retries of 429/5xx (with ``Retry-After``),
  the SDK's own retries off, and tests reach the fake Stripe through an injected transport.
- The SDK's typed exceptions become :class:`StripeError` (a :class:`~billing_gql.ProviderError`)
  carrying Stripe's message; 429, 5xx and no answer at all become
  :class:`~billing_gql.ProviderUnavailable`.
- The API key never appears in a log line or an error message: Stripe's own messages about
  keys are redacted (:func:`~billing_gql.redact_secrets`) before they travel further.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Any, cast

import httpx
import stripe

from billing_gql import (
    HttpClientFactory,
    ProviderError,
    ProviderUnavailable,
    redact_secrets,
    response_time,
)

__all__ = [
    "DEFAULT_API_BASE",
    "STRIPE_VERSION",
    "HttpxTransport",
    "StripeApi",
    "StripeError",
]

DEFAULT_API_BASE = "https://api.stripe.com"
STRIPE_VERSION = "2025-03-31.basil"
"""The API version we send and parse. From this version on, billing periods live on
subscription items and an invoice names its subscription under
``parent.subscription_details``; the parsers also accept the older shapes."""


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


class HttpxTransport(stripe.HTTPClient):
    """The SDK's HTTP client on an ``httpx.AsyncClient`` of ours (async only).

    Connection failures become the SDK's ``APIConnectionError``; the SDK never retries
    (``max_network_retries=0``): our client's :class:`~billing_gql.RetryTransport` does.
    """

    name = "billing-gql-httpx"

    def __init__(self, client: httpx.AsyncClient, logger: logging.Logger) -> None:
        super().__init__()
        self._http = client
        self._log = logger

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        path = httpx.URL(url).path
        try:
            response = await self._http.request(
                method, url, headers=dict(headers), content=post_data
            )
        except httpx.HTTPError as exc:
            self._log.warning("stripe %s %s failed: %s", method.upper(), path, type(exc).__name__)
            reason = f"Stripe could not be reached ({type(exc).__name__})"
            raise stripe.APIConnectionError(reason) from None  # type: ignore[no-untyped-call]
        self._log.debug(
            "stripe %s %s -> %d (request %s)",
            method.upper(),
            path,
            response.status_code,
            response.headers.get("request-id"),
        )
        return response.content, response.status_code, response.headers

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return asyncio.sleep(secs)

    async def close_async(self) -> None:
        await self._http.aclose()

    def close(self) -> None:
        """Nothing to close synchronously: this client is async only."""


class StripeApi:
    """The SDK calls the plugin makes, each answering a plain ``dict`` (and, for the
    ``*_at`` ones, Stripe's time of the answer: its ``Date`` header, else our clock)."""

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
        base = api_base.rstrip("/")
        self._transport = HttpxTransport(http.client(base_url=base), self._log)
        self._client = stripe.StripeClient(
            api_key,
            stripe_version=STRIPE_VERSION,
            base_addresses={"api": base, "connect": base, "files": base, "meter_events": base},
            max_network_retries=0,
            http_client=self._transport,
        )
        self.v1 = self._client.v1

    async def aclose(self) -> None:
        await self._transport.close_async()

    # -- results and errors --------------------------------------------------------------------

    async def _call(self, call: Awaitable[stripe.StripeObject]) -> tuple[dict[str, Any], datetime]:
        """Await one SDK call: its object as a plain dict and Stripe's time of the answer."""
        try:
            found = await call
        except stripe.StripeError as exc:
            raise self._error(exc) from None
        answer = found.last_response
        headers = answer.headers if answer is not None else {}
        return found.to_dict(), response_time(httpx.Response(200, headers=headers))

    def _error(self, exc: stripe.StripeError) -> ProviderError:
        if isinstance(exc, stripe.APIConnectionError):
            return ProviderUnavailable(exc.user_message or "Stripe could not be reached")
        status = exc.http_status or 0
        error = exc.error
        raw = error.message if error is not None else None
        message = (
            redact_secrets(str(raw), [self._api_key], keep_kind=True) if raw else f"HTTP {status}"
        )
        self._log.info(
            "stripe answered %d %s (request %s)",
            status,
            (error.code or error.type or "") if error is not None else "",
            exc.request_id,
        )
        if 200 <= status < 300:
            return ProviderUnavailable("Stripe answered with an unreadable body")
        if status == 429 or status >= 500 or status == 0:
            return ProviderUnavailable(f"Stripe is unavailable: {message}", status=status or None)
        return StripeError(
            f"Stripe: {message}",
            status=status,
            error_type=error.type if error is not None else None,
            stripe_code=error.code if error is not None else None,
            param=error.param if error is not None else None,
            request_id=exc.request_id,
        )

    @staticmethod
    def _key(idempotency_key: str) -> Any:
        return {"idempotency_key": idempotency_key}

    # -- endpoints -----------------------------------------------------------------------------

    async def create_checkout_session(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/checkout/sessions``."""
        create = self.v1.checkout.sessions.create_async
        found, _ = await self._call(create(cast(Any, params), self._key(idempotency_key)))
        return found

    async def retrieve_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """``GET /v1/subscriptions/{id}``; ``None`` when Stripe has no such subscription."""
        found, _ = await self.retrieve_subscription_at(subscription_id)
        return found

    async def retrieve_subscription_at(
        self, subscription_id: str
    ) -> tuple[dict[str, Any] | None, datetime | None]:
        """The subscription (or ``None``) and Stripe's time of reading it."""
        try:
            return await self._call(self.v1.subscriptions.retrieve_async(subscription_id))
        except StripeError as exc:
            if exc.missing:
                return None, None
            raise

    async def update_subscription_at(
        self, subscription_id: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> tuple[dict[str, Any], datetime]:
        """``POST /v1/subscriptions/{id}`` and Stripe's time of the answer."""
        update = self.v1.subscriptions.update_async
        return await self._call(
            update(subscription_id, cast(Any, params), self._key(idempotency_key))
        )

    async def resume_subscription_at(
        self, subscription_id: str, *, idempotency_key: str
    ) -> tuple[dict[str, Any], datetime]:
        """``POST /v1/subscriptions/{id}/resume`` (a subscription in status ``paused``)."""
        resume = self.v1.subscriptions.resume_async
        return await self._call(
            resume(
                subscription_id,
                cast(Any, {"billing_cycle_anchor": "unchanged"}),
                self._key(idempotency_key),
            )
        )

    async def cancel_subscription_at(self, subscription_id: str) -> tuple[dict[str, Any], datetime]:
        """``DELETE /v1/subscriptions/{id}``: cancel now (DELETE is safe to retry)."""
        return await self._call(self.v1.subscriptions.cancel_async(subscription_id))

    async def create_portal_session(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/billing_portal/sessions``."""
        create = self.v1.billing_portal.sessions.create_async
        found, _ = await self._call(create(cast(Any, params), self._key(idempotency_key)))
        return found

    async def create_meter_event(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/billing/meter_events``."""
        create = self.v1.billing.meter_events.create_async
        found, _ = await self._call(create(cast(Any, params), self._key(idempotency_key)))
        return found

    async def list_invoice_payments(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``GET /v1/invoice_payments`` (first page)."""
        body, _ = await self._call(self.v1.invoice_payments.list_async(cast(Any, params)))
        data = body.get("data")
        return [p for p in data if isinstance(p, dict)] if isinstance(data, list) else []

    async def create_refund(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/refunds``."""
        create = self.v1.refunds.create_async
        found, _ = await self._call(create(cast(Any, params), self._key(idempotency_key)))
        return found

    async def list_refunds(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``GET /v1/refunds`` (first page: up to ``limit``)."""
        body, _ = await self._call(self.v1.refunds.list_async(cast(Any, params)))
        data = body.get("data")
        return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []

    async def retrieve_checkout_session(self, session_id: str) -> dict[str, Any]:
        """``GET /v1/checkout/sessions/{id}``."""
        found, _ = await self._call(self.v1.checkout.sessions.retrieve_async(session_id))
        return found
