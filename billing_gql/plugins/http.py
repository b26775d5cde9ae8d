"""The HTTP client every provider plugin uses: timeouts, retries on 429/5xx, injectable transport.

Retries honour ``Retry-After`` (seconds or an HTTP date), capped at ``max_retry_wait``. A 429
and a connection failure are always retried (the provider did nothing); a 5xx is retried when
the request is safe to repeat: a GET/HEAD/PUT/DELETE/OPTIONS, any request carrying an
``Idempotency-Key`` header, or one the caller marks safe with
``extensions={"idempotent": True}`` — a POST or PATCH that sets a state (setting it twice is
setting it once) or that the provider deduplicates by a key in its body (Polar's event
ingestion by ``external_id``). Mark only what is truly safe: a 5xx does not say whether the
first attempt took effect. A request can opt out of retries with ``extensions={"retry":
False}``. Tests pass a transport (``httpx.MockTransport`` or a fake provider app) instead of
the network.

Logging: httpx logs every request's full URL at INFO (and httpcore its connection trace at
DEBUG), so an URL carrying a token (``?token=…``, ``user:pass@``) would reach the log.
:func:`install_log_redaction` (run by every client factory and at runtime start) puts a
:class:`RedactingFilter` on those loggers: query strings, userinfo, ``Bearer``/``Basic``
credentials, known secret shapes and every secret registered with :func:`register_secrets` are
blanked out of the line; the CLI puts the same filter on its handlers, covering every logger.

Usage::

    await client.patch("/v1/things/1", json={"enabled": True}, extensions={"idempotent": True})
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime

import httpx

__all__ = [
    "IDEMPOTENT",
    "HttpClientFactory",
    "RedactingFilter",
    "RetryTransport",
    "install_log_redaction",
    "redact_log_text",
    "register_secrets",
    "response_time",
]

log = logging.getLogger(__name__)

_SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
IDEMPOTENT = "idempotent"
"""The request extension that marks a request safe to repeat after a 5xx (``True``)."""
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Sleep = Callable[[float], Awaitable[None]]


# --- secrets out of log lines -------------------------------------------------------------

_URL = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s'\"<>@]*@)?"
    r"(?P<rest>[^?#\s'\"<>]*)(?P<query>\?[^#\s'\"<>]*)?"
)
_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic|token)(\s+|=)[A-Za-z0-9._~+/=\-]{6,}")
_SECRET_SHAPES = re.compile(
    r"\b(?:sk|rk)_(?:test|live)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9+/=_\-]+"
    r"|\bpolar_[a-z]{2,4}_[A-Za-z0-9_]+|\bbgcs_[A-Za-z0-9_\-]+"
)
_MIN_SECRET = 6
_secrets: set[str] = set()
_LOGGERS = ("httpx", "httpcore")


def register_secrets(values: Iterable[str | None]) -> None:
    """Blank these values (configured keys, admin keys) out of every redacted log line."""
    _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET)


def _url(match: re.Match[str]) -> str:
    userinfo = "***@" if match.group("userinfo") else ""
    query = "?***" if match.group("query") else ""
    return f"{match.group('head')}{userinfo}{match.group('rest')}{query}"


def redact_log_text(text: str) -> str:
    """``text`` without URL query strings and userinfo, credentials, or known secrets."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    text = _URL.sub(_url, text)
    text = _CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _SECRET_SHAPES.sub("***", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with :func:`redact_log_text` (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        redacted = redact_log_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_log_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_log_text(record.exc_text)
        return True


_FILTER = RedactingFilter()


def _add_filter(target: logging.Filterer) -> None:
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(_FILTER)


def install_log_redaction(handlers: Iterable[logging.Handler] = ()) -> None:
    """Put the redacting filter on the HTTP client's loggers (httpx, httpcore and each of
    their child loggers: a logger's filter sees only records created on it) and on
    ``handlers``; idempotent."""
    import httpcore  # noqa: F401 (creates its loggers)

    names = {name for name in logging.root.manager.loggerDict if name.split(".", 1)[0] in _LOGGERS}
    for name in sorted(names | set(_LOGGERS)):
        _add_filter(logging.getLogger(name))
    for handler in handlers:
        _add_filter(handler)


def _http_date(raw: str) -> datetime | None:
    """An HTTP date (``Sun, 22 Nov 2026 10:00:00 GMT``) as an aware datetime, else ``None``."""
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def response_time(response: httpx.Response) -> datetime:
    """The provider's clock at ``response``: its ``Date`` header (whole seconds, UTC), or our
    wall clock when the header is missing or unreadable.

    This is the time to give a state read from, or set by, this answer: the
    ``SubscriptionSnapshot.updated_at`` of what ``fetch_subscription`` and the subscription
    operations return (unless the object carries a finer modification time of its own).
    """
    raw = response.headers.get("date")
    when = _http_date(raw) if raw else None
    return when.astimezone(UTC) if when is not None else datetime.now(UTC)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    when = _http_date(raw)
    if when is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class RetryTransport(httpx.AsyncBaseTransport):
    """Wraps a transport with bounded retries and backoff."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_retry_wait: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        owns_transport: bool = True,
    ) -> None:
        self._transport = transport
        self._owns_transport = owns_transport
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self._sleep = sleep

    def _may_retry_status(self, request: httpx.Request, status: int) -> bool:
        if status not in _RETRY_STATUSES:
            return False
        if status == 429:
            return True
        return (
            request.method in _SAFE_METHODS
            or "idempotency-key" in request.headers
            or request.extensions.get(IDEMPOTENT) is True
        )

    def _wait(self, attempt: int, response: httpx.Response | None) -> float:
        hinted = _retry_after(response) if response is not None else None
        if hinted is not None:
            return min(hinted, self.max_retry_wait)
        jitter: float = random.uniform(0, self.backoff)
        return float(min(self.backoff * (2**attempt) + jitter, self.max_retry_wait))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()  # make the body replayable
        allow_retry = request.extensions.get("retry", True)
        attempt = 0
        while True:
            try:
                response = await self._transport.handle_async_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if not allow_retry or attempt >= self.max_retries:
                    raise
                wait = self._wait(attempt, None)
                log.warning(
                    "%s %s: %s; retrying in %.1fs",
                    request.method,
                    request.url.path,
                    type(exc).__name__,
                    wait,
                )
            else:
                if (
                    not allow_retry
                    or attempt >= self.max_retries
                    or not self._may_retry_status(request, response.status_code)
                ):
                    return response
                wait = self._wait(attempt, response)
                await response.aread()
                await response.aclose()
                log.warning(
                    "%s %s answered %d; retrying in %.1fs",
                    request.method,
                    request.url.path,
                    response.status_code,
                    wait,
                )
            attempt += 1
            await self._sleep(wait)

    async def aclose(self) -> None:
        # An injected (shared, test) transport outlives the clients built on it.
        if self._owns_transport:
            await self._transport.aclose()


class HttpClientFactory:
    """Builds ``httpx.AsyncClient`` objects for one provider."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_retry_wait: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        user_agent: str = "billing-gql",
    ) -> None:
        self._transport = transport
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self._sleep = sleep
        self.user_agent = user_agent
        install_log_redaction()

    def client(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.AsyncClient:
        """A client for ``base_url``; close it (``async with`` or ``aclose``) when done."""
        inner = self._transport if self._transport is not None else httpx.AsyncHTTPTransport()
        transport = RetryTransport(
            inner,
            max_retries=self.max_retries,
            backoff=self.backoff,
            max_retry_wait=self.max_retry_wait,
            sleep=self._sleep,
            owns_transport=self._transport is None,
        )
        merged = {"user-agent": self.user_agent, **(headers or {})}
        return httpx.AsyncClient(
            base_url=base_url,
            headers=merged,
            auth=auth,
            timeout=httpx.Timeout(timeout or self.timeout),
            transport=transport,
            follow_redirects=False,
        )
