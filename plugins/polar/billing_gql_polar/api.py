"""A thin client of Polar's JSON API: requests, headers and errors, nothing about billing-gql.

- ``Authorization: Bearer <organization access token>`` on every request, JSON both ways, all
  under ``{API_BASE}/v1/`` (``https://api.polar.sh`` or ``https://sandbox-api.polar.sh``).
- Polar's errors become exceptions carrying Polar's own words:
  a 422 (``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``) → :class:`PolarValidationError`
  naming each rejected field and Polar's message; another 4xx (``{"error": ..., "detail": ...}``)
  → :class:`PolarError` (``PROVIDER_ERROR`` with Polar's ``detail``); a 429 or 5xx that outlives
  the core HTTP client's retries (which honour ``Retry-After``), or no answer at all →
  :class:`~billing_gql.ProviderUnavailable`.
- The token never appears in a log line or an error message: only method, path and status are
  logged, and anything shaped like a Polar token is blanked out of Polar's messages.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from billing_gql import HttpClientFactory, ProviderError, ProviderUnavailable, response_time

__all__ = [
    "DEFAULT_API_BASE",
    "SANDBOX_API_BASE",
    "FieldError",
    "PolarApi",
    "PolarError",
    "PolarValidationError",
    "redact_tokens",
]

DEFAULT_API_BASE = "https://api.polar.sh"
SANDBOX_API_BASE = "https://sandbox-api.polar.sh"

# Organization/personal access tokens, customer session tokens, client secrets, webhook secrets.
_TOKEN_PATTERN = re.compile(r"\b(polar_[a-z]{2,4}_|whsec_)[A-Za-z0-9_*]+")


def redact_tokens(text: str, *secrets: str) -> str:
    """``text`` with the given secrets and anything shaped like a Polar token blanked out."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _TOKEN_PATTERN.sub(lambda m: f"{m.group(1)}***", text)


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


def _path_id(value: str) -> str:
    return quote(value, safe="")


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
    """Polar's endpoints that the plugin uses, each one HTTP call."""

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
        self._client = http.client(
            base_url=api_base.rstrip("/"),
            headers={"authorization": f"Bearer {access_token}", "accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- transport -----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        idempotent: bool = False,
    ) -> dict[str, Any]:
        """Call Polar and return the decoded JSON object; raise :class:`PolarError`,
        :class:`PolarValidationError` or :class:`~billing_gql.ProviderUnavailable`.

        ``idempotent``: repeating the request has the effect of sending it once, so the core
        client may retry it after a 5xx like a GET (Polar takes no ``Idempotency-Key``)."""
        found, _ = await self.request_at(method, path, body, idempotent=idempotent)
        return found

    async def request_at(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        idempotent: bool = False,
    ) -> tuple[dict[str, Any], datetime]:
        """Like :meth:`request`, also returning Polar's time of the answer (its ``Date``
        header, else our clock): the moment a fetched object's state was true."""
        try:
            response = await self._client.request(
                method,
                path,
                json=dict(body) if body is not None else None,
                extensions={"idempotent": True} if idempotent else None,
            )
        except httpx.HTTPError as exc:
            self._log.warning("polar %s %s failed: %s", method, path, type(exc).__name__)
            raise ProviderUnavailable(
                f"Polar could not be reached ({type(exc).__name__})"
            ) from None
        self._log.debug("polar %s %s -> %d", method, path, response.status_code)
        if response.is_success:
            try:
                decoded = response.json()
            except ValueError:
                raise ProviderUnavailable("Polar answered with an unreadable body") from None
            if not isinstance(decoded, dict):
                raise ProviderUnavailable("Polar answered with an unexpected body")
            return decoded, response_time(response)
        raise self._error(response)

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        payload: Any = None
        with contextlib.suppress(ValueError):
            payload = response.json()
        error = payload.get("error") if isinstance(payload, dict) else None
        detail = payload.get("detail") if isinstance(payload, dict) else None
        self._log.info(
            "polar %s %s answered %d %s",
            response.request.method,
            response.request.url.path,
            status,
            error if isinstance(error, str) else "",
        )
        if status == 422 and isinstance(detail, list):
            errors = [
                FieldError(e.loc, redact_tokens(e.msg, self._token), e.type)
                for e in _field_errors(detail)
            ]
            return PolarValidationError(errors)
        text = redact_tokens(str(detail), self._token) if isinstance(detail, str) else None
        if status == 429 or status >= 500:
            reason = f": {text}" if text else ""
            return ProviderUnavailable(
                f"Polar is unavailable (HTTP {status}){reason}", status=status
            )
        return PolarError(
            f"Polar: {text or f'HTTP {status}'}",
            status=status,
            error=error if isinstance(error, str) else None,
            detail=text,
        )

    # -- endpoints -----------------------------------------------------------------------------

    async def create_checkout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/checkouts/`` (answers 201 with the checkout)."""
        return await self.request("POST", "/v1/checkouts/", body)

    async def get_checkout(self, checkout_id: str) -> dict[str, Any]:
        """``GET /v1/checkouts/{id}``."""
        return await self.request("GET", f"/v1/checkouts/{_path_id(checkout_id)}")

    async def get_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """``GET /v1/subscriptions/{id}``; ``None`` when Polar has no such subscription."""
        found, _ = await self.get_subscription_at(subscription_id)
        return found

    async def get_subscription_at(
        self, subscription_id: str
    ) -> tuple[dict[str, Any] | None, datetime | None]:
        """The subscription (or ``None``) and Polar's time of reading it."""
        try:
            return await self.request_at("GET", f"/v1/subscriptions/{_path_id(subscription_id)}")
        except PolarError as exc:
            if exc.missing:
                return None, None
            raise

    async def update_subscription(
        self, subscription_id: str, body: Mapping[str, Any], *, idempotent: bool = False
    ) -> dict[str, Any]:
        """``PATCH /v1/subscriptions/{id}`` with exactly one of Polar's body shapes (the
        server forbids extra keys, so shapes are never mixed). ``idempotent``: the shape sets
        a state (``cancel_at_period_end``), so it may be retried after a 5xx."""
        found, _ = await self.update_subscription_at(subscription_id, body, idempotent=idempotent)
        return found

    async def update_subscription_at(
        self, subscription_id: str, body: Mapping[str, Any], *, idempotent: bool = False
    ) -> tuple[dict[str, Any], datetime]:
        """:meth:`update_subscription` and Polar's time of the answer."""
        return await self.request_at(
            "PATCH",
            f"/v1/subscriptions/{_path_id(subscription_id)}",
            body,
            idempotent=idempotent,
        )

    async def revoke_subscription(self, subscription_id: str) -> dict[str, Any]:
        """``DELETE /v1/subscriptions/{id}``: end it now (safe to retry)."""
        found, _ = await self.revoke_subscription_at(subscription_id)
        return found

    async def revoke_subscription_at(self, subscription_id: str) -> tuple[dict[str, Any], datetime]:
        """:meth:`revoke_subscription` and Polar's time of the answer."""
        return await self.request_at("DELETE", f"/v1/subscriptions/{_path_id(subscription_id)}")

    async def create_customer_session(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/customer-sessions/`` (answers 201 with ``customer_portal_url``)."""
        return await self.request("POST", "/v1/customer-sessions/", body)

    async def ingest_events(self, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """``POST /v1/events/ingest``: ``{inserted, duplicates}``. Polar deduplicates by
        ``external_id`` (set on every event we send), so a retry after a 5xx is safe."""
        return await self.request(
            "POST", "/v1/events/ingest", {"events": list(events)}, idempotent=True
        )

    async def customer_state_at(
        self, external_customer_id: str
    ) -> tuple[dict[str, Any] | None, datetime | None]:
        """``GET /v1/customers/external/{external_id}/state`` and Polar's time of reading it;
        ``None`` when Polar has no customer with that external id."""
        try:
            return await self.request_at(
                "GET", f"/v1/customers/external/{_path_id(external_customer_id)}/state"
            )
        except PolarError as exc:
            if exc.missing:
                return None, None
            raise
