"""Validating a batch of usage events for ``recordUsage`` (:mod:`.ingest`).

One pass over the events as GraphQL received them (the bulk path hands it the raw JSON
objects, see :mod:`billing_gql.graphql.fast.usage`) coerces, validates and builds the insert's
rows; a batch with any invalid event is rejected whole (one error per bad event). This loop runs
once per event on the hot path, so it stays one function: a helper call per event costs
measurable time (bench/usage_ingest.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson

from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.money import InvalidAmount, parse_decimal

__all__ = [
    "EVENT_FIELDS",
    "FUTURE_TOLERANCE",
    "MAX_EVENTS",
    "MAX_VALUE",
    "NUMERIC_AGGREGATIONS",
    "Batch",
    "MeterInfo",
    "NotCoercible",
    "RawCoercion",
    "event_names",
    "parse_uuids",
    "validate_batch",
]

MAX_EVENTS = 1000
"""Events per ``recordUsage`` call (more: ``TOO_MANY_EVENTS``)."""
FUTURE_TOLERANCE = timedelta(minutes=5)
"""How far past the clock's now an event's timestamp may be (clock skew at the sender)."""
MAX_VALUE = Decimal("1e18")
"""Values (and property numbers) must be below this; usage quantities are never that large."""
MAX_ID_LENGTH = 255
EVENT_FIELDS = frozenset(
    {"id", "customerId", "externalCustomerId", "meter", "timestamp", "value", "properties"}
)
"""The fields of the API's ``UsageEventInput``, as the raw events name them."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NUMERIC_AGGREGATIONS = frozenset({"SUM", "MAX", "LATEST"})
"""Aggregations of a meter that may read a property's number instead of ``value``."""


@dataclass(frozen=True, slots=True)
class MeterInfo:
    id: UUID
    position: int
    """1-based, in the uuid array the insert receives."""
    code: str
    number_property: str | None
    """The property whose number the meter aggregates instead of ``value`` (SUM/MAX/LATEST)."""
    providers: tuple[str, ...]
    metered: bool


class NotCoercible(Exception):
    """Raw events hold a value the API's input coercion would refuse or change.

    The caller then takes the ordinary GraphQL path, which reports it exactly as GraphQL does.
    """


@dataclass(frozen=True, slots=True)
class RawCoercion:
    """How the API coerces the raw (JSON) strings of an event's ``timestamp`` and ``value``.

    Each returns ``None`` for a string the API's scalar refuses. The GraphQL face provides
    these, so this service keeps no GraphQL import.
    """

    timestamp: Callable[[str], datetime | None]
    decimal: Callable[[str], Decimal | None]


def event_names(events: Sequence[Any]) -> tuple[set[str], set[str], set[str]]:
    """The meter codes, customer ids and external ids to look up (checking they are strings
    and that no event has an unknown field; the validation loop checks the rest)."""
    try:
        meter_codes = {event["meter"] for event in events}
        id_texts = {event.get("customerId") for event in events}
        external_ids = {event.get("externalCustomerId") for event in events}
    except (KeyError, TypeError, AttributeError):  # not an object, no meter, unhashable
        raise NotCoercible from None
    # Every event is an object (only those take event["meter"]): no unknown field in any.
    if not set().union(*events) <= EVENT_FIELDS:
        raise NotCoercible
    id_texts.discard(None)
    external_ids.discard(None)
    for names in (meter_codes, id_texts, external_ids):
        for name in names:
            if type(name) is not str:
                raise NotCoercible
    return meter_codes, id_texts, external_ids


_UUIDS: dict[str, UUID | None] = {}
"""Customer id strings already parsed (``UUID()`` is slow Python code; a batch of 1000 events
for 1000 customers spent ~1 ms in it). Bounded: cleared when full."""
_UUIDS_MAX = 100_000
_MISSING: Any = object()


def parse_uuids(texts: Collection[str]) -> dict[str, UUID | None]:
    out: dict[str, UUID | None] = {}
    known = _UUIDS
    for text in texts:
        found = known.get(text, _MISSING)
        if found is _MISSING:
            try:
                found = UUID(text)
            except ValueError:
                found = None
            if len(known) >= _UUIDS_MAX:
                known.clear()
            known[text] = found
        out[text] = found
    return out


@dataclass(frozen=True, slots=True)
class Batch:
    rows: list[tuple[Any, ...]]
    """``(event_id, customer#, meter#, unix seconds, microseconds, value, properties)``."""
    document: str
    """``rows`` as JSON text."""
    distinct: bool
    """No event id appears twice in the batch."""


def validate_batch(
    events: Sequence[Any],
    meters: dict[str, MeterInfo],
    by_id_text: dict[str, int],
    by_external: dict[str, int],
    now: datetime,
    *,
    coercion: RawCoercion | None,
) -> Batch:
    """One pass over the batch: the insert's rows, or every bad event's first problem.

    Raw strings are coerced first, for every event (:class:`NotCoercible` wins over the
    batch's user errors, as GraphQL's variable coercion runs before the resolver). The loop
    body is one piece on purpose: it runs once per event on ``recordUsage``'s hot path, where
    a helper call per event is measurable; its steps are marked by comments.
    """
    latest = now + FUTURE_TOLERANCE
    since_epoch = now - _EPOCH
    now_seconds = since_epoch.days * 86400 + since_epoch.seconds
    now_micros = since_epoch.microseconds
    errors: list[UserInputError] = []
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    fromisoformat = datetime.fromisoformat

    def bad(code: str, message: str, index: int, *field: str) -> None:
        errors.append(UserInputError(code, message, ["events", str(index), *field]))

    for i, event in enumerate(events):
        get = event.get
        # Coercion: what the API's scalars make of the raw strings.
        ts = get("timestamp")
        if type(ts) is str:
            if coercion is None:
                raise NotCoercible
            try:
                # The common form (…Z or …+00:00): the DateTime scalar makes the same datetime
                # of it; anything else goes through the scalar's own parse.
                parsed: datetime | None = fromisoformat(ts)
            except ValueError:
                parsed = None
            if parsed is None or parsed.tzinfo is not UTC:
                parsed = coercion.timestamp(ts)
                if parsed is None:
                    raise NotCoercible
            ts = parsed
        elif ts is not None and not isinstance(ts, datetime):
            raise NotCoercible
        value = get("value")
        if value is None:
            value_text: str | None = "1"  # the default
        elif type(value) is str:
            if coercion is None:
                raise NotCoercible
            if len(value) < 19 and value.isdigit() and value.isascii():
                # Plain ASCII digits (the common case): an exact integer below 1e18 already;
                # PostgreSQL reads the same number from the text as from str(Decimal(text)).
                value_text = value
            else:
                number = coercion.decimal(value)
                if number is None:
                    raise NotCoercible
                value_text = str(number) if 0 <= number < MAX_VALUE else None
        elif isinstance(value, Decimal):
            value_text = str(value) if 0 <= value < MAX_VALUE else None
        else:
            raise NotCoercible

        event_id = get("id")
        if type(event_id) is not str:
            raise NotCoercible

        # Validation, in this order; the first problem of each event is reported.
        if not event_id or len(event_id) > MAX_ID_LENGTH:
            bad("INVALID_INPUT", f"id must be 1-{MAX_ID_LENGTH} characters", i, "id")
            continue
        customer_id = get("customerId")
        external_id = get("externalCustomerId")
        if customer_id is not None:
            if external_id is not None:
                bad("INVALID_INPUT", _ONE_CUSTOMER, i, "customerId")
                continue
            customer = by_id_text.get(customer_id)
            if customer is None:
                bad("UNKNOWN_CUSTOMER", "no such customer", i, "customerId")
                continue
        elif external_id is not None:
            customer = by_external.get(external_id)
            if customer is None:
                bad("UNKNOWN_CUSTOMER", _no_external(external_id), i, "externalCustomerId")
                continue
        else:
            bad("INVALID_INPUT", _ONE_CUSTOMER, i, "customerId")
            continue
        meter = meters.get(event["meter"])
        if meter is None:
            bad("UNKNOWN_METER", f"no meter {event['meter']!r}", i, "meter")
            continue
        if ts is None:
            seconds, micros = now_seconds, now_micros
        elif ts > latest:
            bad("TIMESTAMP_IN_FUTURE", _IN_FUTURE, i, "timestamp")
            continue
        else:
            since_epoch = ts - _EPOCH
            seconds = since_epoch.days * 86400 + since_epoch.seconds
            micros = since_epoch.microseconds
        if value_text is None:
            bad("INVALID_INPUT", "value must be a number from 0 to below 1e18", i, "value")
            continue
        props = get("properties")
        if props is not None and type(props) is not dict:
            bad("INVALID_INPUT", "properties must be a JSON object", i, "properties")
            continue
        name = meter.number_property
        if name is not None:
            number = _property_number(props.get(name) if props else None)
            if number is None:
                bad("INVALID_INPUT", _needs_number(meter, name), i, "properties", name)
                continue
            value_text = str(number)
        append((event_id, customer, meter.position, seconds, micros, value_text, props))
    if errors:
        raise UserInputErrors(errors)
    return _encoded(rows)


_ONE_CUSTOMER = "give exactly one of customerId and externalCustomerId"
_IN_FUTURE = "the timestamp is more than 5 minutes in the future"


def _no_external(external_id: str) -> str:
    return f"no customer with externalId {external_id!r}"


def _needs_number(meter: MeterInfo, name: str) -> str:
    return f"meter {meter.code!r} needs a number from 0 to below 1e18 in properties.{name}"


def _encoded(rows: list[tuple[Any, ...]]) -> Batch:
    """The valid batch's rows with their JSON document (the insert's one parameter)."""
    try:
        # orjson: ~10x the standard library's speed here. It writes NaN and Infinity (which
        # JSON cannot carry; the /graphql body parser refuses them) as null.
        document = orjson.dumps(rows).decode()
    except TypeError:
        raise UserInputErrors(_unencodable(rows)) from None
    return Batch(rows, document, len({row[0] for row in rows}) == len(rows))


def _unencodable(rows: list[tuple[Any, ...]]) -> list[UserInputError]:
    """The events whose properties JSON cannot carry (integers beyond 64 bits, say).

    Only called when every event passed validation, so ``rows[i]`` is event ``i``.
    """
    errors = []
    for i, row in enumerate(rows):
        try:
            orjson.dumps(row[6])
        except TypeError:
            errors.append(
                UserInputError(
                    "INVALID_INPUT",
                    "properties must be JSON with numbers that fit 64 bits or floats",
                    ["events", str(i), "properties"],
                )
            )
    return errors


def _property_number(raw: object) -> Decimal | None:
    """A property's number: a JSON number or a decimal string, finite, 0 <= n < 1e18."""
    if type(raw) is int:
        number = Decimal(raw)
    elif type(raw) is float:
        if not math.isfinite(raw):
            return None
        number = Decimal(repr(raw))  # the shortest repr is the literal the sender wrote
    elif type(raw) is str:
        try:
            number = parse_decimal(raw)
        except InvalidAmount:
            return None
    else:
        return None
    return number if 0 <= number < MAX_VALUE else None
