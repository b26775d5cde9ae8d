"""SePay's user API, read for reconciliation (v2 ``GET /v2/transactions``) and to confirm one
webhook's transfer (v1 ``GET /userapi/transactions/details/{id}``: the webhook's numeric ``id``
is a v1 id; v2 ids are UUIDs).

Requests carry ``Authorization: Bearer <API_TOKEN>``. The list pages with ``page``/``per_page``
(at most 100) and filters by ``transaction_date_from`` (``YYYY-MM-DD HH:MM:SS``, Vietnam time).
Answers look like ``{status, data: [...], meta: {pagination: {..., has_more}}}``; the legacy v1
shape ``{status, error, messages, transactions: [...]}`` is read too (no paging then).

Rate limits (3 requests/s): a 429 says how long to wait in ``Retry-After`` (v2) or
``x-sepay-userapi-retry-after`` (v1). The core HTTP client's retries wait exactly that (up to
``max_wait``; a longer wait is reported at once) and retry 5xx answers and connection failures
with backoff, since a GET is safe to repeat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from billing_gql import HttpClientFactory, ProviderError, ProviderUnavailable
from billing_gql import retry_after as core_retry_after

__all__ = ["MAX_PER_PAGE", "UNKNOWN", "SePayApi", "TransactionPage"]

log = logging.getLogger(__name__)

MAX_PER_PAGE = 100

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class TransactionPage:
    rows: Sequence[Mapping[str, Any]]
    has_more: bool


RETRY_AFTER = ("retry-after", "x-sepay-userapi-retry-after")
"""Where SePay says how long to wait after a 429 (v2, v1)."""


def retry_after(response: httpx.Response) -> float | None:
    """How long SePay asks us to wait after a 429 (v2 and v1 headers)."""
    return core_retry_after(response, RETRY_AFTER)


def _error_text(response: httpx.Response) -> str:
    """SePay's explanation of a refusal (never echoing our credentials)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        parts = [
            str(body[key])
            for key in ("error_code", "message", "error")
            if isinstance(body.get(key), str | int) and body.get(key)
        ]
        if parts:
            return f"HTTP {response.status_code}: " + " — ".join(parts)
    return f"HTTP {response.status_code}"


UNKNOWN: Mapping[str, Any] = {}
"""What :meth:`SePayApi.transaction` answers for an id SePay does not know."""


class SePayApi:
    """A small client of the transactions list."""

    def __init__(
        self,
        http: HttpClientFactory,
        *,
        base_url: str,
        token: str,
        v1_base: str = "https://my.sepay.vn",
        max_attempts: int = 5,
        backoff: float = 1.0,
        max_wait: float = 60.0,
    ) -> None:
        self.v1_base = v1_base.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_wait = max_wait
        self.sleep: Sleep = asyncio.sleep
        """How the client waits between attempts (tests record instead of sleeping)."""
        self._client = http.client(
            base_url=base_url.rstrip("/"),
            headers={"authorization": f"Bearer {token}", "accept": "application/json"},
            retry_after_headers=RETRY_AFTER,
            max_retries=max_attempts - 1,
            backoff=backoff,
            max_retry_wait=max_wait,
            cap_wait=False,
            sleep=self._sleep,
        )

    async def _sleep(self, seconds: float) -> None:
        await self.sleep(seconds)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, params: Mapping[str, str | int]) -> httpx.Response:
        """A GET, retried by the core client; 429/5xx that outlived it → unavailable."""
        try:
            response = await self._client.get(path, params=dict(params))
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"SePay API unreachable: {type(exc).__name__}") from None
        status = response.status_code
        if status == 429:
            hinted = retry_after(response)
            wait = f" (retry after {hinted:g}s)" if hinted is not None else ""
            raise ProviderUnavailable(f"SePay API rate limit{wait}", status=429)
        if status >= 500:
            raise ProviderUnavailable(f"SePay API answered {status}", status=status)
        return response

    async def transactions(
        self, *, date_from: str, page: int, per_page: int = MAX_PER_PAGE
    ) -> TransactionPage:
        """One page of incoming transactions since ``date_from`` (Vietnam time), oldest first.

        :raises ProviderError: the token is refused or the answer cannot be read.
        :raises ProviderUnavailable: SePay cannot be reached or keeps rate-limiting.
        """
        response = await self._get(
            "/v2/transactions",
            {
                "transaction_date_from": date_from,
                "transaction_date_sort": "asc",
                "transfer_type": "in",
                "page": page,
                "per_page": per_page,
            },
        )
        return parse_page(_body(response), page)

    async def transaction(self, sepay_id: str) -> Mapping[str, Any]:
        """One transaction by its numeric (webhook, v1) id: ``GET {v1_base}/userapi/
        transactions/details/{id}``; :data:`UNKNOWN` (empty) when SePay does not know it.

        :raises ProviderError: the token is refused or the answer cannot be read.
        :raises ProviderUnavailable: SePay cannot be reached or keeps rate-limiting.
        """
        if not sepay_id.isdigit():
            return UNKNOWN
        response = await self._get(f"{self.v1_base}/userapi/transactions/details/{sepay_id}", {})
        if response.status_code == 404:
            return UNKNOWN
        body = _body(response)
        if not isinstance(body, dict):
            raise ProviderError("SePay API answered something other than a JSON object")
        row = body.get("transaction")
        if row is None and isinstance(body.get("data"), dict):
            row = body["data"]
        if not row:
            return UNKNOWN  # v1 answers an unknown id with no transaction
        if not isinstance(row, dict):
            raise ProviderError("SePay API answered an unreadable transaction")
        return row


def _body(response: httpx.Response) -> Any:
    """The JSON body of a final (not 429/5xx) answer, or :class:`ProviderError`."""
    if response.status_code in (401, 403):
        raise ProviderError(
            f"SePay refused the API token ({_error_text(response)}); check "
            "BILLING_GQL_SEPAY_API_TOKEN",
            status=response.status_code,
        )
    if response.status_code >= 400:
        raise ProviderError(
            f"SePay API error ({_error_text(response)})", status=response.status_code
        )
    try:
        return response.json()
    except ValueError:
        # v1 answers a refused token with HTTP 200 and an empty body.
        raise ProviderError("SePay API answered an unreadable body") from None


def parse_page(body: object, page: int) -> TransactionPage:
    """Read a list answer in the v2 shape or the legacy v1 one."""
    if not isinstance(body, dict):
        raise ProviderError("SePay API answered something other than a JSON object")
    status = body.get("status")
    if isinstance(status, str) and status.lower() not in ("success", "ok"):
        raise ProviderError(f"SePay API status {status!r}: {body.get('message') or ''}".strip())
    if body.get("error"):
        raise ProviderError(f"SePay API error: {body['error']}")
    rows: object = body.get("data")
    paged = True
    if isinstance(rows, dict) and isinstance(rows.get("transactions"), list):
        rows = rows["transactions"]
    if rows is None and isinstance(body.get("transactions"), list):
        rows, paged = body["transactions"], False  # the legacy v1 shape
    if not isinstance(rows, list):
        raise ProviderError("SePay API answer has no transaction list")
    kept = [r for r in rows if isinstance(r, dict)]
    if len(kept) != len(rows):
        log.warning("SePay API: %d transaction entries were not objects", len(rows) - len(kept))
    return TransactionPage(kept, paged and bool(kept) and _has_more(body, page))


def _has_more(body: Mapping[str, Any], page: int) -> bool:
    meta = body.get("meta")
    pagination = meta.get("pagination") if isinstance(meta, dict) else None
    if not isinstance(pagination, dict):
        pagination = body.get("pagination") if isinstance(body.get("pagination"), dict) else {}
    assert isinstance(pagination, dict)
    has_more = pagination.get("has_more")
    if isinstance(has_more, bool):
        return has_more
    last = pagination.get("last_page")
    current = pagination.get("current_page", page)
    if isinstance(last, int) and isinstance(current, int):
        return current < last
    return False
