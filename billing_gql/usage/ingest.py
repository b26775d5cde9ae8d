"""Ingesting usage events: ``recordUsage``'s service, built for batches of up to 1000 events.

The hot path does a fixed amount of database work per batch, whatever its size:

1. one query for the batch's meters and one for its customers (by id and by external id);
2. a tight validation loop in Python (no per-event objects beyond the input tuples);
3. one ``INSERT … SELECT FROM unnest(…) ON CONFLICT (event_id) DO NOTHING``: the primary key on
   the client's event id makes a repeat — in the same batch, a later one or a concurrent one —
   a no-op that is counted as a duplicate, never applied twice. The same statement queues the
   new events for providers that bill usage (the outbox, see :mod:`.forwarding`).

A batch with any invalid event is rejected whole (one error per bad event, nothing stored).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import orjson

from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.money import InvalidAmount, parse_decimal
from billing_gql.usage.models import RecordUsageResult, UsageEventDraft
from billing_gql.usage.thresholds import check_thresholds

if TYPE_CHECKING:
    from billing_gql.runtime import Runtime

__all__ = [
    "FUTURE_TOLERANCE",
    "MAX_EVENTS",
    "MAX_VALUE",
    "record_usage",
    "usage_providers",
]

log = logging.getLogger(__name__)

MAX_EVENTS = 1000
"""Events per ``recordUsage`` call (more: ``TOO_MANY_EVENTS``)."""
FUTURE_TOLERANCE = timedelta(minutes=5)
"""How far past the clock's now an event's timestamp may be (clock skew at the sender)."""
MAX_VALUE = Decimal("1e18")
"""Values (and property numbers) must be below this; usage quantities are never that large."""
MAX_ID_LENGTH = 255

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMERIC_PROPERTY = frozenset({"SUM", "MAX", "LATEST"})
_DEADLOCK_RETRIES = 5


# Both lookups in one round trip: the batch's meters ('m' rows) and customers ('c' rows).
_LOOKUP_SQL = (
    "SELECT 'm' AS kind, m.id, m.code AS key, m.aggregation, m.property, "
    "ARRAY(SELECT DISTINCT r.provider FROM meter_provider_refs r WHERE r.meter_id = m.id) "
    "AS providers, "
    # A meter whose code is a limited feature somewhere (a plan's or a provider grant's): its
    # customers' thresholds are checked after ingesting (cheap to know here, and it saves
    # that work for every other batch).
    "(EXISTS (SELECT 1 FROM plan_features f WHERE f.feature = m.code "
    "AND f.limit_value IS NOT NULL) OR EXISTS (SELECT 1 FROM provider_grant_features g "
    "WHERE g.feature = m.code AND g.limit_value IS NOT NULL)) AS metered "
    "FROM meters m WHERE m.code = ANY($1::text[]) "
    "UNION ALL "
    "SELECT 'c', c.id, c.external_id, NULL, NULL, NULL::text[], NULL::boolean "
    "FROM customers c WHERE c.id = ANY($2::uuid[]) OR c.external_id = ANY($3::text[])"
)
# The batch travels as one JSON document ``[[event_id, customer#, meter#, unix seconds,
# microseconds, value, properties], …]`` with customers and meters as 1-based positions in two
# small uuid arrays: encoding it is one C-level json.dumps, where per-element array parameters
# cost asyncpg ~4 us per event in Python (measured; the server's CPU is the scarce resource on
# this path). Timestamps as integer (seconds, microseconds) are exact and cheaper to build and
# to convert than ISO text. Rows are inserted in document order, so ``seq`` follows the batch.
_INSERT = (
    "INSERT INTO usage_events (event_id, customer_id, meter_id, ts, value, properties, "
    "ingested_at) "
    "SELECT x->>0, ($2::uuid[])[(x->>1)::int], ($3::uuid[])[(x->>2)::int], "
    "to_timestamp((x->>3)::bigint) + (x->>4)::int * interval '1 microsecond', "
    "(x->>5)::numeric, NULLIF(x->6, 'null'::jsonb), $4 "
    "FROM jsonb_array_elements($1::text::jsonb) AS x "
    "ON CONFLICT (event_id) DO NOTHING "
)
# The same, also queueing each new event for the providers its meter forwards to.
_INSERT_FORWARD_SQL = (
    "WITH ins AS (" + _INSERT + "RETURNING event_id, meter_id), "  # noqa: S608
    "queued AS ("
    "INSERT INTO usage_outbox (provider, event_id, status, attempts, next_attempt_at, created_at) "
    "SELECT f.provider, ins.event_id, 'pending', 0, $4, $4 FROM ins "
    "JOIN unnest($5::uuid[], $6::text[]) AS f(meter_id, provider) ON f.meter_id = ins.meter_id "
    "ON CONFLICT (provider, event_id) DO NOTHING) "
    "SELECT count(*) FROM ins"
)


@dataclass(frozen=True, slots=True)
class _MeterInfo:
    id: UUID
    position: int
    """1-based, in the uuid array the insert receives."""
    aggregation: str
    property: str | None
    providers: tuple[str, ...]
    metered: bool


def usage_providers(runtime: Runtime) -> frozenset[str]:
    """Configured providers that take usage (their plugin implements ``report_usage``)."""
    return frozenset(p.name for p in runtime.providers.configured() if p.supports("usage"))


async def record_usage(runtime: Runtime, events: Sequence[UsageEventDraft]) -> RecordUsageResult:
    """Validate and store a batch of usage events, idempotently by event id.

    Once stored, events of meters that are also limited features are checked against their
    entitlements' 80% and 100% thresholds (:mod:`.thresholds`).

    :raises UserInputErrors: any invalid event (nothing is stored); each error's ``field`` is
        ``["events", "<index>", "<field>"]``. ``TOO_MANY_EVENTS`` for more than
        :data:`MAX_EVENTS` events.
    """
    if len(events) > MAX_EVENTS:
        raise UserInputError(
            "TOO_MANY_EVENTS",
            f"at most {MAX_EVENTS} events per call (got {len(events)})",
            ["events"],
        )
    if not events:
        return RecordUsageResult(accepted=0, duplicates=0)
    now = await runtime.clock.now()
    forwarding = usage_providers(runtime)

    meter_codes: set[str] = set()
    id_texts: set[str] = set()
    external_ids: set[str] = set()
    for e in events:
        meter_codes.add(e.meter)
        if e.customer_id is not None:
            id_texts.add(e.customer_id)
        if e.external_customer_id is not None:
            external_ids.add(e.external_customer_id)
    uuids = _parse_uuids(id_texts)

    async with runtime.db.acquire() as conn:
        found = await conn.fetch(
            _LOOKUP_SQL,
            list(meter_codes),
            [u for u in uuids.values() if u is not None],
            list(external_ids),
        )
        meter_rows = [r for r in found if r["kind"] == "m"]
        customer_rows = [r for r in found if r["kind"] == "c"]
        meters = {
            r["key"]: _MeterInfo(
                r["id"],
                position,
                r["aggregation"],
                r["property"],
                tuple(sorted(set(r["providers"]) & forwarding)),
                r["metered"],
            )
            for position, r in enumerate(meter_rows, start=1)
        }
        # Events name customers by strings; index those strings straight to the customer's
        # 1-based position in the batch's uuid array (UUID hashing is slow Python code).
        customers = [r["id"] for r in customer_rows]
        position_of = {uid: position for position, uid in enumerate(customers, start=1)}
        by_external = {r["key"]: position_of[r["id"]] for r in customer_rows}
        by_id_text = {
            text: position_of[uid]
            for text, uid in uuids.items()
            if uid is not None and uid in position_of
        }
        batch = _validate(events, meters, by_id_text, by_external, now)
        meter_ids = [r["id"] for r in meter_rows]

        forward_meters: list[UUID] = []
        forward_providers: list[str] = []
        for info in meters.values():
            for provider in info.providers:
                forward_meters.append(info.id)
                forward_providers.append(provider)
        metered = {info.position for info in meters.values() if info.metered}
        pairs: set[tuple[UUID, str]] = set()
        if metered:
            pairs = {
                (customers[row[1] - 1], meter_rows[row[2] - 1]["key"])
                for row in batch.rows
                if row[2] in metered
            }

        args: list[Any] = [batch.document, customers, meter_ids, now]
        sql = _INSERT
        if forward_meters:
            sql = _INSERT_FORWARD_SQL
            args += [forward_meters, forward_providers]
        accepted = await _insert(conn, sql, args)

    if pairs and accepted:
        try:
            await check_thresholds(runtime, pairs)
        except Exception:
            # The events are stored; the next batch for these customers checks again.
            log.exception("checking usage thresholds failed")
    return RecordUsageResult(accepted=accepted, duplicates=len(events) - accepted)


async def _insert(conn: asyncpg.Connection, sql: str, args: list[Any]) -> int:
    # Two concurrent batches holding the same ids in different orders can deadlock on the
    # primary key; PostgreSQL aborts one statement whole, so running it again is safe.
    for attempt in range(_DEADLOCK_RETRIES):
        try:
            if sql == _INSERT_FORWARD_SQL:
                return int(await conn.fetchval(sql, *args))
            # A plain INSERT (no CTE to count with): its command tag is "INSERT 0 <n>".
            status: str = await conn.execute(sql, *args)
            return int(status.rsplit(" ", 1)[1])
        except asyncpg.DeadlockDetectedError:
            if attempt == _DEADLOCK_RETRIES - 1:
                raise
            log.info("usage insert deadlocked with a concurrent batch; retrying")
    raise AssertionError("unreachable")


def _parse_uuids(texts: Collection[str]) -> dict[str, UUID | None]:
    out: dict[str, UUID | None] = {}
    for text in texts:
        try:
            out[text] = UUID(text)
        except ValueError:
            out[text] = None
    return out


@dataclass(frozen=True, slots=True)
class _Batch:
    rows: list[list[Any]]
    """``[event_id, customer#, meter#, unix seconds, microseconds, value, properties]``."""
    document: str
    """``rows`` as JSON text."""


def _validate(
    events: Sequence[UsageEventDraft],
    meters: dict[str, _MeterInfo],
    by_id_text: dict[str, int],
    by_external: dict[str, int],
    now: datetime,
) -> _Batch:
    """One pass over the batch: the insert's document, or every bad event's first problem."""
    latest = now + FUTURE_TOLERANCE
    since_epoch = now - _EPOCH
    now_seconds = since_epoch.days * 86400 + since_epoch.seconds
    now_micros = since_epoch.microseconds
    errors: list[UserInputError] = []
    rows: list[list[Any]] = []
    append = rows.append

    def bad(code: str, message: str, index: int, *field: str) -> None:
        errors.append(UserInputError(code, message, ["events", str(index), *field]))

    for i, e in enumerate(events):
        if not e.id or len(e.id) > MAX_ID_LENGTH:
            bad("INVALID_INPUT", f"id must be 1-{MAX_ID_LENGTH} characters", i, "id")
            continue
        if e.customer_id is not None:
            if e.external_customer_id is not None:
                bad(
                    "INVALID_INPUT",
                    "give exactly one of customerId and externalCustomerId",
                    i,
                    "customerId",
                )
                continue
            customer = by_id_text.get(e.customer_id)
            if customer is None:
                bad("UNKNOWN_CUSTOMER", "no such customer", i, "customerId")
                continue
        elif e.external_customer_id is not None:
            customer = by_external.get(e.external_customer_id)
            if customer is None:
                bad(
                    "UNKNOWN_CUSTOMER",
                    f"no customer with externalId {e.external_customer_id!r}",
                    i,
                    "externalCustomerId",
                )
                continue
        else:
            bad(
                "INVALID_INPUT",
                "give exactly one of customerId and externalCustomerId",
                i,
                "customerId",
            )
            continue
        meter = meters.get(e.meter)
        if meter is None:
            bad("UNKNOWN_METER", f"no meter {e.meter!r}", i, "meter")
            continue
        ts = e.timestamp
        if ts is None:
            seconds, micros = now_seconds, now_micros
        elif ts > latest:
            bad(
                "TIMESTAMP_IN_FUTURE",
                "the timestamp is more than 5 minutes in the future",
                i,
                "timestamp",
            )
            continue
        else:
            since_epoch = ts - _EPOCH
            seconds = since_epoch.days * 86400 + since_epoch.seconds
            micros = since_epoch.microseconds
        value = e.value
        if value is None:
            value_text = "1"
        elif 0 <= value < MAX_VALUE:
            value_text = str(value)
        else:
            bad("INVALID_INPUT", "value must be a number from 0 to below 1e18", i, "value")
            continue
        props = e.properties
        if props is not None and type(props) is not dict:
            bad("INVALID_INPUT", "properties must be a JSON object", i, "properties")
            continue
        if meter.property is not None and meter.aggregation in _NUMERIC_PROPERTY:
            number = _property_number(props.get(meter.property) if props else None)
            if number is None:
                bad(
                    "INVALID_INPUT",
                    f"meter {e.meter!r} needs a number from 0 to below 1e18 "
                    f"in properties.{meter.property}",
                    i,
                    "properties",
                    meter.property,
                )
                continue
            value_text = str(number)
        append([e.id, customer, meter.position, seconds, micros, value_text, props])
    if errors:
        raise UserInputErrors(errors)
    try:
        # orjson: ~10x the standard library's speed here. It writes NaN and Infinity (which
        # JSON cannot carry; the /graphql body parser refuses them) as null.
        document = orjson.dumps(rows).decode()
    except TypeError:
        raise UserInputErrors(_unencodable(rows)) from None
    return _Batch(rows, document)


def _unencodable(rows: list[list[Any]]) -> list[UserInputError]:
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
