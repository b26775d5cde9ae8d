"""Log output: the request id every line carries, and the JSON format
(``BILLING_GQL_LOG_FORMAT=json``).

The HTTP face sets :data:`REQUEST_ID` for each request (the client's ``X-Request-ID`` when it
is a sane token, else a new one) and returns it in the response's ``X-Request-ID``; work the
request starts — tasks, and jobs it enqueues, which carry the id as an argument — runs with
the same id, so the worker's lines about that work name it too.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "RequestIdFilter",
    "current_request_id",
    "request_id_for",
    "use_json",
    "with_request_id",
]

REQUEST_ID: ContextVar[str | None] = ContextVar("billing_gql_request_id", default=None)
_SANE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_id_for(header: str | None) -> str:
    """The client's ``X-Request-ID`` when it is 1–128 printable token characters, else a new
    id (a header that could forge or break a log line is not echoed)."""
    if header is not None and _SANE_ID.match(header):
        return header
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return REQUEST_ID.get()


@contextmanager
def with_request_id(request_id: str | None) -> Iterator[None]:
    """Run the block with ``request_id`` as the current one (a job carrying its request's)."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (``record.request_id``, or ``None``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, request_id, and the
    traceback as ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def use_json(handlers: Iterable[logging.Handler]) -> None:
    """Switch ``handlers`` to :class:`JsonFormatter`, with the request id on every record."""
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
        handler.addFilter(RequestIdFilter())
