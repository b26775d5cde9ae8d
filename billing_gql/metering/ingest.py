"""Ingesting usage events: ``recordUsage``'s service, built for batches of up to 1000 events.

The hot path does a fixed amount of database work per batch, whatever its size:

1. one query for the batch's meters and customers (by id and by external id);
2. one validation loop in Python over the events as GraphQL received them (the bulk path hands
   it the raw JSON objects, see :mod:`billing_gql.graphql.fast.usage`), building the insert's
   rows (:mod:`.validation`);
3. one ``INSERT … SELECT`` from a JSON document. The primary key on the client's event id makes
   a repeat — in the same batch, a later one or a concurrent one — a duplicate that is never
   stored twice: a batch that repeats no id within itself is first inserted plainly (cheaper
   for PostgreSQL), and if the key refuses it (an id already stored, or stored meanwhile by a
   concurrent batch) the statement stores nothing and the batch is inserted again with
   ``ON CONFLICT (event_id) DO NOTHING``, which counts every repeat as a duplicate. The same
   statement queues the new events for providers that bill usage (the outbox, see
   :mod:`billing_gql.usage.forwarding`). The insert and dedupe path is :mod:`.insert`.

A batch with any invalid event is rejected whole (one error per bad event, nothing stored).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from billing_gql.core.usage import RecordUsageResult
from billing_gql.crashpoints import crashpoint
from billing_gql.errors import UserInputError
from billing_gql.metering.insert import insert_batch
from billing_gql.metering.thresholds import check_thresholds
from billing_gql.metering.validation import (
    MAX_EVENTS,
    NUMERIC_AGGREGATIONS,
    Batch,
    MeterInfo,
    RawCoercion,
    event_names,
    parse_uuids,
    validate_batch,
)
from billing_gql.plugins.types import ProviderCapability

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext

__all__ = ["record_usage", "usage_providers"]

log = logging.getLogger(__name__)

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


def usage_providers(runtime: ServiceContext) -> frozenset[str]:
    """Configured providers that take usage (their plugin implements ``report_usage``)."""
    return frozenset(
        p.name for p in runtime.providers.configured() if p.supports(ProviderCapability.USAGE)
    )


async def record_usage(
    runtime: ServiceContext, events: Sequence[Any], coercion: RawCoercion | None = None
) -> RecordUsageResult:
    """Validate and store a batch of usage events, idempotently by event id.

    Each event is a mapping with ``UsageEventInput``'s field names
    (:data:`~.validation.EVENT_FIELDS`).
    ``timestamp`` and ``value`` are typed (``datetime``, ``Decimal``) or, with ``coercion``,
    raw strings as a JSON body holds them; ``None`` or absent means the default (now, 1).

    Once stored, events of meters that are also limited features are checked against their
    entitlements' 80% and 100% thresholds (:mod:`.thresholds`).

    :raises NotCoercible: (only with ``coercion``) an event is not what the API's input
        coercion would accept unchanged; nothing was stored.
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
    meter_codes, id_texts, external_ids = event_names(events)
    if not events:
        return RecordUsageResult(accepted=0, duplicates=0)
    now = await runtime.clock.now()
    forwarding = usage_providers(runtime)
    uuids = parse_uuids(id_texts)

    async with runtime.db.acquire() as conn:
        found = await _lookup(conn, meter_codes, uuids, external_ids, forwarding)
        batch = validate_batch(
            events, found.meters, found.by_id_text, found.by_external, now, coercion=coercion
        )
        pairs = _threshold_pairs(batch, found)
        forward_meters, forward_providers = _outbox_targets(found.meters)
        args: list[Any] = [batch.document, found.customers, found.meter_ids, now]
        if forward_meters:
            args += [forward_meters, forward_providers]
        accepted = await insert_batch(conn, args, forward=bool(forward_meters), new=batch.distinct)
    crashpoint("usage.stored")

    # Also for a batch of duplicates only: a client retrying after a crash that came between
    # the insert and this check gets the crossing recorded now (its key makes it once).
    if pairs:
        try:
            await check_thresholds(runtime, pairs)
        except Exception:
            # The events are stored; the next batch for these customers checks again.
            log.exception("checking usage thresholds failed")
    return RecordUsageResult(accepted=accepted, duplicates=len(events) - accepted)


@dataclass(frozen=True, slots=True)
class _Found:
    """The batch's meters and customers, as the validation loop and the insert take them."""

    meters: dict[str, MeterInfo]
    """By code."""
    meter_ids: list[UUID]
    """The insert's meter array (``MeterInfo.position`` is 1-based in it)."""
    customers: list[UUID]
    """The insert's customer array."""
    by_id_text: dict[str, int]
    """A customer id as the events spell it → its 1-based position in ``customers``."""
    by_external: dict[str, int]
    """An external id → its 1-based position in ``customers``."""


async def _lookup(
    conn: asyncpg.Connection,
    meter_codes: set[str],
    uuids: dict[str, UUID | None],
    external_ids: set[str],
    forwarding: frozenset[str],
) -> _Found:
    """Load the batch's meters and customers in one query.

    :param forwarding: the configured providers that take usage (:func:`usage_providers`).
    """
    found = await conn.fetch(
        _LOOKUP_SQL,
        list(meter_codes),
        [u for u in uuids.values() if u is not None],
        list(external_ids),
    )
    meter_rows = [r for r in found if r["kind"] == "m"]
    customer_rows = [r for r in found if r["kind"] == "c"]
    meters = {
        r["key"]: MeterInfo(
            r["id"],
            position,
            r["key"],
            r["property"] if r["aggregation"] in NUMERIC_AGGREGATIONS else None,
            tuple(sorted(set(r["providers"]) & forwarding)),
            r["metered"],
        )
        for position, r in enumerate(meter_rows, start=1)
    }
    # Events name customers by strings; index those strings straight to the customer's
    # 1-based position in the batch's uuid array (UUID hashing is slow Python code).
    customers = [r["id"] for r in customer_rows]
    position_of = {uid: position for position, uid in enumerate(customers, start=1)}
    return _Found(
        meters=meters,
        meter_ids=[r["id"] for r in meter_rows],
        customers=customers,
        by_id_text={
            text: position_of[uid]
            for text, uid in uuids.items()
            if uid is not None and uid in position_of
        },
        by_external={r["key"]: position_of[r["id"]] for r in customer_rows},
    )


def _outbox_targets(meters: dict[str, MeterInfo]) -> tuple[list[UUID], list[str]]:
    """The (meter, provider) pairs new events are queued for, as the insert's two arrays."""
    forward_meters: list[UUID] = []
    forward_providers: list[str] = []
    for info in meters.values():
        for provider in info.providers:
            forward_meters.append(info.id)
            forward_providers.append(provider)
    return forward_meters, forward_providers


def _threshold_pairs(batch: Batch, found: _Found) -> set[tuple[UUID, str]]:
    """The (customer, feature) pairs whose thresholds the batch may cross: its events of
    meters that are also limited features (none, without a scan, for every other batch)."""
    metered = {info.position: info.code for info in found.meters.values() if info.metered}
    if not metered:
        return set()
    customers = found.customers
    return {(customers[row[1] - 1], metered[row[2]]) for row in batch.rows if row[2] in metered}
