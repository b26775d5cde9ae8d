"""The HTTP client every provider plugin uses: timeouts, retries on 429/5xx, injectable transport.

Retries honour ``Retry-After`` (seconds or an HTTP date; a client may name other headers its
provider uses, as SePay's ``x-sepay-userapi-retry-after``), capped at ``max_retry_wait`` (or,
with ``cap_wait=False``, an answer asking for longer is handed back instead). A 429 and a
connection failure are always retried (the provider did nothing); a 5xx and any other transport
failure (a read timeout) are retried when the request is safe to repeat: a
GET/HEAD/PUT/DELETE/OPTIONS, any request carrying an ``Idempotency-Key`` header, or one the
caller marks safe with ``extensions={"idempotent": True}`` — a POST or PATCH that sets a state
(setting it twice is setting it once) or that the provider deduplicates by a key in its body
(Polar's event ingestion by ``external_id``). Mark only what is truly safe: a 5xx does not say
whether the first attempt took effect. A request can opt out of retries with
``extensions={"retry": False}``. Tests pass a transport (``httpx.MockTransport`` or a fake
provider app) instead of the network.

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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from billing_gql.errors import ProviderError, ProviderUnavailable

__all__ = [
    "IDEMPOTENT",
    "RETRY_AFTER",
    "HttpClientFactory",
    "RedactingFilter",
    "RetryTransport",
    "install_log_redaction",
    "redact_log_text",
    "redact_secrets",
    "register_secrets",
    "request_json",
    "response_time",
    "retry_after",
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
# Stripe keys (secret, restricted, publishable; masked ones too), webhook signing secrets,
# Polar tokens, our customer session tokens and API keys. ``kind`` is what a message may keep.
_SECRET_SHAPES = re.compile(
    r"\b(?P<kind>(?:sk|rk|pk)(?=_(?:test|live)_)|whsec|polar_[a-z]{2,4}(?=_)|bgcs|bgk)"
    r"_[A-Za-z0-9*+/=_\-]+"
)
_MIN_SECRET = 6
_secrets: set[str] = set()
_LOGGERS = ("httpx", "httpcore")


def register_secrets(values: Iterable[str | None]) -> None:
    """Blank these values (configured keys, admin keys) out of every redacted log line."""
    _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET)


def redact_secrets(
    text: str, secrets: Iterable[str | None] = (), *, keep_kind: bool = False
) -> str:
    """``text`` with each of ``secrets`` (a provider's keys; empty ones are skipped) and
    anything shaped like a known secret (Stripe ``sk_``/``rk_``/``pk_`` keys, ``whsec_``
    signing secrets, Polar ``polar_…_`` tokens, session tokens) replaced by ``***``.

    ``keep_kind=True`` keeps a shaped secret's kind (``sk_***``, ``polar_oat_***``): for a
    provider's message about a key, which stays readable without the key. The one
    implementation behind the log filter, the core's stored error texts and the plugins.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    if keep_kind:
        return _SECRET_SHAPES.sub(lambda m: f"{m.group('kind')}_***", text)
    return _SECRET_SHAPES.sub("***", text)


def _url(match: re.Match[str]) -> str:
    userinfo = "***@" if match.group("userinfo") else ""
    query = "?***" if match.group("query") else ""
    return f"{match.group('head')}{userinfo}{match.group('rest')}{query}"


def redact_log_text(text: str) -> str:
    """``text`` without URL query strings and userinfo, credentials, or known secrets."""
    text = _URL.sub(_url, redact_secrets(text, _secrets))
    return _CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


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


_UNIX_TIME = 1e9  # a wait hint past this many seconds is a point in time
RETRY_AFTER: tuple[str, ...] = ("retry-after",)
"""The headers a retry reads its wait from unless a client names others."""


def retry_after(response: httpx.Response, headers: Sequence[str] = RETRY_AFTER) -> float | None:
    """How long ``response`` asks us to wait, in seconds: the first of ``headers`` holding a
    number of seconds, a Unix time (a number past 10⁹, as some ``x-ratelimit-reset`` headers
    say it) or an HTTP date (a past time is 0); ``None`` when none is readable."""
    for header in headers:
        raw = (response.headers.get(header) or "").strip()
        if not raw:
            continue
        try:
            number = float(raw)
        except ValueError:
            pass
        else:
            if number > _UNIX_TIME:
                return max(0.0, number - datetime.now(UTC).timestamp())
            return max(0.0, number)
        when = _http_date(raw)
        if when is not None:
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


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
        retry_after_headers: Sequence[str] = RETRY_AFTER,
        cap_wait: bool = True,
    ) -> None:
        self._transport = transport
        self._owns_transport = owns_transport
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self._sleep = sleep
        self.retry_after_headers = tuple(retry_after_headers)
        self.cap_wait = cap_wait

    @staticmethod
    def _safe(request: httpx.Request) -> bool:
        return (
            request.method in _SAFE_METHODS
            or "idempotency-key" in request.headers
            or request.extensions.get(IDEMPOTENT) is True
        )

    def _may_retry_status(self, request: httpx.Request, status: int) -> bool:
        if status not in _RETRY_STATUSES:
            return False
        return status == 429 or self._safe(request)

    def _hinted(self, response: httpx.Response) -> float | None:
        return retry_after(response, self.retry_after_headers)

    def _wait(self, attempt: int, response: httpx.Response | None) -> float:
        hinted = self._hinted(response) if response is not None else None
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
            except httpx.TransportError as exc:
                connecting = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if not allow_retry or attempt >= self.max_retries:
                    raise
                if not connecting and not self._safe(request):
                    raise  # the provider may have acted (a read timeout of a POST)
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
                if not self.cap_wait:
                    hinted = self._hinted(response)
                    if hinted is not None and hinted > self.max_retry_wait:
                        return response  # asked to wait longer than we may: the caller says so
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
        retry_after_headers: Sequence[str] = RETRY_AFTER,
        max_retries: int | None = None,
        backoff: float | None = None,
        max_retry_wait: float | None = None,
        cap_wait: bool = True,
        sleep: Sleep | None = None,
    ) -> httpx.AsyncClient:
        """A client for ``base_url``; close it (``async with`` or ``aclose``) when done.

        ``retry_after_headers``: where the provider says how long to wait (first readable
        wins); ``max_retries``/``backoff``/``max_retry_wait``: this client's own bounds
        instead of the factory's; ``cap_wait=False``: an answer asking to wait longer than
        ``max_retry_wait`` is handed back (to be reported) instead of retried sooner than
        asked; ``sleep``: how this client waits (the factory's unless given).
        """
        inner = self._transport if self._transport is not None else httpx.AsyncHTTPTransport()
        transport = RetryTransport(
            inner,
            max_retries=self.max_retries if max_retries is None else max_retries,
            backoff=self.backoff if backoff is None else backoff,
            max_retry_wait=self.max_retry_wait if max_retry_wait is None else max_retry_wait,
            sleep=sleep or self._sleep,
            owns_transport=self._transport is None,
            retry_after_headers=retry_after_headers,
            cap_wait=cap_wait,
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


Refusal = Callable[[httpx.Response, str | None, str | None], ProviderError]
"""Builds the error of a refused request from the answer, the provider's error code and its
message (each ``None`` when the body has none)."""


def _error_fields(body: object) -> tuple[str | None, str | None]:
    """(code, message) of a JSON error body: ``{"error": {"code", "message"}}``, or top-level
    ``code``/``error`` and ``message``/``detail`` strings."""
    if not isinstance(body, Mapping):
        return None, None
    inner = body.get("error")
    source: Mapping[str, Any] = inner if isinstance(inner, Mapping) else body
    code = next((v for k in ("code", "error") if isinstance(v := source.get(k), str) and v), None)
    message = next(
        (v for k in ("message", "detail") if isinstance(v := source.get(k), str) and v), None
    )
    return code, message


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    refusal: Refusal | None = None,
    logger: logging.Logger | None = None,
    **kwargs: Any,
) -> tuple[Any, datetime]:
    """Send one request with ``client`` (``kwargs`` go to ``client.request``: ``json``,
    ``params``, ``headers``, ``extensions``) and answer its decoded JSON body and the
    provider's time of the answer (:func:`response_time`).

    The mapping every provider needs, ``provider`` naming it in the messages:

    - no answer (``httpx.HTTPError``: refused connection, timeout) → :class:`ProviderUnavailable`
      ``"{provider} could not be reached (ConnectError)"``;
    - 429 or 5xx (after the client's retries) → :class:`ProviderUnavailable`
      ``"{provider} is unavailable: {message}"``;
    - another 4xx → ``refusal(response, code, message)``, by default a :class:`ProviderError`
      ``"{provider}: {message}"`` carrying the code and status;
    - a 2xx that is not JSON → :class:`ProviderUnavailable`.

    ``code`` and ``message`` come from a JSON error body (``{"error": {"code", "message"}}``,
    or top-level ``code``/``error`` and ``message``/``detail``); the message is ``HTTP 404``
    without one. Only method, path, status and code are logged (to ``logger``).
    """
    log_to = logger or log
    path = httpx.URL(url).path
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        log_to.warning("%s %s %s failed: %s", provider, method, path, type(exc).__name__)
        raise ProviderUnavailable(
            f"{provider} could not be reached ({type(exc).__name__})"
        ) from None
    status = response.status_code
    log_to.debug("%s %s %s -> %d", provider, method, path, status)
    if response.is_success:
        try:
            return response.json(), response_time(response)
        except ValueError:
            raise ProviderUnavailable(f"{provider} answered with an unreadable body") from None
    try:
        code, message = _error_fields(response.json())
    except ValueError:
        code, message = None, None
    log_to.info("%s %s %s answered %d %s", provider, method, path, status, code or "")
    if status == 429 or status >= 500:
        reason = message or f"HTTP {status}"
        raise ProviderUnavailable(f"{provider} is unavailable: {reason}", status=status)
    if refusal is not None:
        raise refusal(response, code, message)
    raise ProviderError(
        f"{provider}: {message or f'HTTP {status}'}", provider_code=code, status=status
    )
