"""Polar's API through the official ``polar-sdk`` (module ``polar``), nothing about billing-gql.

- Every call is a method of the SDK's services for API version 2026-10
  (``polar.v2026_10.services``): the SDK builds the request (``Authorization: Bearer
  <organization access token>``, ``Polar-Version``, the URL under ``{API_BASE}/v1/``, JSON)
  and raises its typed errors. ``API_BASE`` is ``https://api.polar.sh`` or the sandbox's
  ``https://sandbox-api.polar.sh``.
- The SDK's requests are sent by the core's HTTP client (:class:`SdkClient`): our timeouts and
  our retries of 429/5xx (``Retry-After``); the SDK has no retries of its own. Tests reach the
  fake Polar through an injected transport.
- The SDK's typed answers are handed on as plain dicts (the JSON shape the mapping reads).
- Polar's errors become exceptions carrying Polar's own words:
  a 422 (``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``) → :class:`PolarValidationError`
  naming each rejected field and Polar's message; another 4xx (``{"error": ..., "detail": ...}``)
  → :class:`PolarError` (``PROVIDER_ERROR`` with Polar's ``detail``); a 429 or 5xx that outlives
  the core HTTP client's retries (which honour ``Retry-After``), or no answer at all →
  :class:`~billing_gql.ProviderUnavailable`.
- The token never appears in a log line or an error message: only method, path and status are
  logged, and anything shaped like a Polar token is blanked out of Polar's messages
  (:func:`~billing_gql.redact_secrets`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import httpx
from polar import PolarClientError, PolarDeserializationError, PolarNetworkError, PolarServerError
from polar import PolarError as SdkError
from polar.base import AsyncClientBase, parse_response_json
from polar.v2026_10.client import SERVERS, PolarAsync
from polar.v2026_10.errors import ResourceNotFound
from polar.v2026_10.services.checkouts import CheckoutsAsync
from polar.v2026_10.services.customer_sessions import CustomerSessionsAsync
from polar.v2026_10.services.events import EventsAsync
from polar.v2026_10.services.meters import MetersAsync
from polar.v2026_10.services.products import ProductsAsync
from polar.v2026_10.services.refunds import RefundsAsync
from polar.v2026_10.services.subscriptions import SubscriptionsAsync

from billing_gql import (
    HttpClientFactory,
    ProviderError,
    ProviderUnavailable,
    redact_secrets,
    response_time,
)

__all__ = [
    "DEFAULT_API_BASE",
    "SANDBOX_API_BASE",
    "FieldError",
    "PolarApi",
    "PolarError",
    "PolarValidationError",
    "SdkClient",
]

DEFAULT_API_BASE = SERVERS["production"]
SANDBOX_API_BASE = SERVERS["sandbox"]


class PolarError(ProviderError):
    """Polar refused a request (a 4xx other than 429)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error: str | None = None,
        detail: str | None = None,
        field: list[str] | None = None,
    ) -> None:
        super().__init__(message, provider_code=error, status=status, field=field)
        self.error = error
        self.detail = detail

    @property
    def missing(self) -> bool:
        """True when Polar says the object does not exist."""
        return self.status == 404


@dataclass(frozen=True)
class FieldError:
    """One entry of a 422 answer: where (``loc``) and what Polar said (``msg``)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    @property
    def path(self) -> list[str]:
        """Where in the request, without the leading ``body`` (``["products", "0"]``)."""
        parts = list(self.loc)
        if parts and parts[0] in ("body", "query", "path"):
            parts = parts[1:]
        return [str(p) for p in parts]

    @property
    def field(self) -> str:
        """The field as a dotted path without the leading ``body`` (``products.0``)."""
        return ".".join(self.path) or "request"


class PolarValidationError(PolarError):
    """Polar answered 422: the request did not validate. The message names each field;
    ``field`` (the userErrors path) is the first rejected one's."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        described = "; ".join(f"{e.field}: {e.msg}" for e in errors) or "invalid request"
        first = errors[0].path if errors else []
        super().__init__(
            f"Polar rejected the request: {described}",
            status=422,
            error="validation_error",
            detail=described,
            field=first or None,
        )
        self.errors = tuple(errors)


@dataclass
class _Exchange:
    """What one SDK call needs from, and leaves in, :class:`SdkClient` (per task)."""

    idempotent: bool = False
    answered_at: datetime | None = None
    status: int | None = None
    failure: str | None = None
    body: bytes = b""


_EXCHANGE: ContextVar[_Exchange | None] = ContextVar("billing_gql_polar_exchange", default=None)


class SdkClient(AsyncClientBase):
    """The SDK's client, sending its requests through an ``httpx.AsyncClient`` of ours.

    The SDK still builds each request (URL, ``Authorization``, ``Polar-Version``, JSON);
    :meth:`send_request` hands it to our client: its retries, timeouts and transport. A call
    marked idempotent (:meth:`PolarApi._call`) may be retried after a 5xx like a GET."""

    def __init__(
        self, client: httpx.AsyncClient, *, base_url: str, access_token: str, logger: logging.Logger
    ) -> None:
        super().__init__(base_url, PolarAsync.version, access_token, client.timeout)
        self._http = client
        self._log = logger

    async def send_request(self, request: httpx.Request) -> httpx.Response:
        exchange = _EXCHANGE.get()
        if exchange is not None and exchange.idempotent:
            request.extensions["idempotent"] = True
        try:
            response = await self._http.send(request)
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
            self._log.warning("polar %s %s failed: %s", request.method, request.url.path, failure)
            if exchange is not None:
                exchange.failure = failure
            raise PolarNetworkError(failure) from None
        self._log.debug("polar %s %s -> %d", request.method, request.url.path, response.status_code)
        if exchange is not None:
            exchange.answered_at = response_time(response)
            exchange.status = response.status_code
            exchange.body = response.content
        return response

    async def aclose(self) -> None:
        await self._http.aclose()
        await self.__aexit__()


def _path_id(value: str) -> str:
    """An id as one path segment: the SDK puts ids into its URLs as they are."""
    return quote(value, safe="")


def _plain(found: object) -> dict[str, Any]:
    """An SDK answer (a dataclass) as the JSON object it was read from."""
    if dataclasses.is_dataclass(found) and not isinstance(found, type):
        return dataclasses.asdict(found)
    if isinstance(found, dict):
        return found
    raise ProviderUnavailable("Polar answered with an unexpected body")


def _json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error_payload(exc: PolarClientError) -> Any:
    """The error body of a refused request: the SDK's error model, or Polar's JSON text."""
    error = exc.error
    if isinstance(error, str):
        return _json(error)
    if dataclasses.is_dataclass(error) and not isinstance(error, type):
        return dataclasses.asdict(error)
    return None


def _field_errors(detail: object) -> list[FieldError]:
    errors: list[FieldError] = []
    if not isinstance(detail, list):
        return errors
    for item in detail:
        if not isinstance(item, Mapping):
            continue
        loc = item.get("loc")
        errors.append(
            FieldError(
                loc=tuple(p for p in loc if isinstance(p, str | int))
                if isinstance(loc, list)
                else (),
                msg=str(item.get("msg") or "invalid"),
                type=str(item.get("type") or ""),
            )
        )
    return errors


class PolarApi:
    """The SDK calls the plugin makes, each answering a plain ``dict`` (and, for the ``*_at``
    ones, Polar's time of the answer: its ``Date`` header, else our clock)."""

    def __init__(
        self,
        http: HttpClientFactory,
        *,
        access_token: str,
        api_base: str = DEFAULT_API_BASE,
        logger: logging.Logger | None = None,
    ) -> None:
        self._token = access_token
        self._log = logger or logging.getLogger("billing_gql.provider.polar")
        base = api_base.rstrip("/")
        self._client = SdkClient(
            http.client(base_url=base),
            base_url=base,
            access_token=access_token,
            logger=self._log,
        )
        self.checkouts = CheckoutsAsync(self._client)
        self.subscriptions = SubscriptionsAsync(self._client)
        self.customer_sessions = CustomerSessionsAsync(self._client)
        self.events = EventsAsync(self._client)
        self.products = ProductsAsync(self._client)
        self.meters = MetersAsync(self._client)
        self.refunds = RefundsAsync(self._client)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- results and errors --------------------------------------------------------------------

    async def _call(
        self, call: Awaitable[object], *, idempotent: bool = False
    ) -> tuple[dict[str, Any], datetime]:
        """Await one SDK call: its answer as a plain dict and Polar's time of the answer.

        ``idempotent``: repeating the request has the effect of sending it once, so the core
        client may retry it after a 5xx like a GET (Polar takes no ``Idempotency-Key``)."""
        exchange = _Exchange(idempotent=idempotent)
        token = _EXCHANGE.set(exchange)
        try:
            found = await call
        except SdkError as exc:
            raise self._error(exc, exchange) from None
        except ValueError:
            # polar-sdk reads a 429's Retry-After with int(): an HTTP date breaks it.
            if exchange.status != 429:
                raise
            raise ProviderUnavailable("Polar is unavailable (HTTP 429)", status=429) from None
        finally:
            _EXCHANGE.reset(token)
        return _plain(found), exchange.answered_at or datetime.now(UTC)

    def _error(self, exc: SdkError, exchange: _Exchange) -> ProviderError:
        if isinstance(exc, PolarNetworkError):
            return ProviderUnavailable(f"Polar could not be reached ({exchange.failure})")
        status = exchange.status or 0
        if isinstance(exc, PolarServerError):
            return ProviderUnavailable(
                f"Polar is unavailable (HTTP {exc.status_code})", status=exc.status_code
            )
        if isinstance(exc, PolarClientError):
            code, payload = exc.status_code or status, _error_payload(exc)
        elif isinstance(exc, PolarDeserializationError) and 400 <= status < 500:
            # An error body the SDK has no model for on this method (a 403 ``NotPermitted``
            # where the SDK knows only ``AlreadyCanceledSubscription``): Polar's JSON as sent.
            code, payload = status, _json(exchange.body)
        else:
            return ProviderUnavailable("Polar answered with an unexpected body")
        error = payload.get("error") if isinstance(payload, dict) else None
        detail = payload.get("detail") if isinstance(payload, dict) else None
        self._log.info("polar answered %d %s", code, error if isinstance(error, str) else "")
        if code == 422 and isinstance(detail, list):
            errors = [
                FieldError(e.loc, redact_secrets(e.msg, [self._token], keep_kind=True), e.type)
                for e in _field_errors(detail)
            ]
            return PolarValidationError(errors)
        text = (
            redact_secrets(str(detail), [self._token], keep_kind=True)
            if isinstance(detail, str)
            else None
        )
        if code == 429:
            reason = f": {text}" if text else ""
            return ProviderUnavailable(f"Polar is unavailable (HTTP {code}){reason}", status=code)
        return PolarError(
            f"Polar: {text or f'HTTP {code}'}",
            status=code,
            error=error if isinstance(error, str) else None,
            detail=text,
        )

    # -- endpoints -----------------------------------------------------------------------------

    async def create_checkout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/checkouts/`` (answers 201 with the checkout)."""
        found, _ = await self._call(self.checkouts.create(**cast(Any, body)))
        return found

    async def get_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """``GET /v1/subscriptions/{id}``; ``None`` when Polar has no such subscription."""
        found, _ = await self.get_subscription_at(subscription_id)
        return found

    async def get_subscription_at(
        self, subscription_id: str
    ) -> tuple[dict[str, Any] | None, datetime | None]:
        """The subscription (or ``None``) and Polar's time of reading it."""
        try:
            return await self._call(self.subscriptions.get(_path_id(subscription_id)))
        except PolarError as exc:
            if exc.missing:
                return None, None
            raise

    async def update_subscription_at(
        self, subscription_id: str, body: Mapping[str, Any], *, idempotent: bool = False
    ) -> tuple[dict[str, Any], datetime]:
        """``PATCH /v1/subscriptions/{id}`` with exactly one of Polar's body shapes (the server
        forbids extra keys, so shapes are never mixed) and Polar's time of the answer.
        ``idempotent``: the shape sets a state (``cancel_at_period_end``), so it may be retried
        after a 5xx."""
        update = self.subscriptions.update(_path_id(subscription_id), **cast(Any, body))
        return await self._call(update, idempotent=idempotent)

    async def revoke_subscription_at(self, subscription_id: str) -> tuple[dict[str, Any], datetime]:
        """``DELETE /v1/subscriptions/{id}``: end it now (safe to retry), and Polar's time."""
        return await self._call(self.subscriptions.revoke(_path_id(subscription_id)))

    async def get_product(self, product_id: str) -> dict[str, Any] | None:
        """``GET /v1/products/{id}``; ``None`` when Polar has no such product."""
        return await self._get_or_none(self.products.get(_path_id(product_id)))

    async def get_meter(self, meter_id: str) -> dict[str, Any] | None:
        """``GET /v1/meters/{id}``; ``None`` when Polar has no such meter."""
        return await self._get_or_none(self.meters.get(_path_id(meter_id)))

    async def _get_or_none(self, call: Awaitable[object]) -> dict[str, Any] | None:
        try:
            found, _ = await self._call(call)
        except PolarError as exc:
            if exc.missing:
                return None
            raise
        return found

    async def create_customer_session(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/customer-sessions/`` (answers 201 with ``customer_portal_url``)."""
        found, _ = await self._call(self.customer_sessions.create(**cast(Any, body)))
        return found

    async def ingest_events(self, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """``POST /v1/events/ingest``: ``{inserted, duplicates}``. Polar deduplicates by
        ``external_id`` (set on every event we send), so a retry after a 5xx is safe."""
        ingest = self.events.ingest(events=cast(Any, list(events)))
        found, _ = await self._call(ingest, idempotent=True)
        return found

    async def customer_state_at(
        self, external_customer_id: str
    ) -> tuple[dict[str, Any] | None, datetime | None]:
        """``GET /v1/customers/external/{external_id}/state`` and Polar's time of reading it;
        ``None`` when Polar has no customer with that external id.

        Sent through the SDK's client but read as plain JSON: polar-sdk 1.0.2 types the
        state's ``active_subscriptions[].status`` as a benefit grant's ``granted|disabled``
        (a clash of two generated ``Status`` types), so its ``get_state_external`` cannot
        read any customer with an active subscription."""
        request = self._client.build_request(
            "GET",
            "/v1/customers/external/{external_id}/state",
            path_params={"external_id": _path_id(external_customer_id)},
        )

        async def state() -> object:
            response = await self._client.send_request(request)
            return parse_response_json(response, None, {404: ResourceNotFound})

        try:
            return await self._call(state())
        except PolarError as exc:
            if exc.missing:
                return None, None
            raise

    async def create_refund(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/refunds/`` (answers 201 with the refund). Polar takes no idempotency
        key: it is not retried after a 5xx (the caller looks for it first, by our id)."""
        found, _ = await self._call(self.refunds.create(**cast(Any, body)))
        return found

    async def list_refunds(self, order_id: str) -> list[dict[str, Any]]:
        """``GET /v1/refunds/?order_id=…``: the order's refunds (first 100, newest first)."""
        found, _ = await self._call(self.refunds.list(order_id=order_id, limit=100))
        items = found.get("items")
        return [r for r in items if isinstance(r, dict)] if isinstance(items, list) else []
