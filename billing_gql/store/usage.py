"""Usage tables: meters, their provider references, and the usage events they aggregate."""

from __future__ import annotations

from decimal import Decimal

from piccolo.columns import (
    JSONB,
    UUID,
    BigInt,
    BigSerial,
    ForeignKey,
    Integer,
    Numeric,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.constraints import Check, Unique
from piccolo.table import Table

from billing_gql.store.customers import Customer


class Meter(Table, tablename="meters"):
    id = UUID(primary_key=True)
    code = Varchar(length=100, unique=True)
    name = Text()
    aggregation = Varchar(length=20)
    property = Varchar(length=200, null=True, default=None)
    created_at = Timestamptz()

    meters_aggregation_check = Check(
        "aggregation IN ('COUNT', 'SUM', 'MAX', 'UNIQUE_COUNT', 'LATEST')"
    )


class MeterProviderRef(Table, tablename="meter_provider_refs"):
    id = UUID(primary_key=True)
    meter_id = ForeignKey(references=Meter, on_delete=OnDelete.cascade, null=False)
    provider = Varchar(length=50)
    ref = Varchar(length=255)  # type: ignore[assignment]  # shadows Table.ref(), unused here
    currency = Varchar(length=3, null=True, default=None)

    meter_provider_refs_key = Unique(["meter_id", "provider", "currency"], nulls_distinct=False)


class UsageEvent(Table, tablename="usage_events"):
    """One ingested usage event; ``recordUsage`` writes these in bulk.

    Partitioned by RANGE of ``ts``: one partition per UTC month (``usage_events_pYYYY_MM``,
    created ahead by the worker, see :mod:`billing_gql.usage.partitions`) and a DEFAULT
    partition, so no insert ever fails. It has no primary key in the database (a unique key of a
    partitioned table must include ``ts``): the client's event id is unique through
    :class:`UsageEventId`, written in the same statement. Piccolo's implicit ``id`` column of
    this class does not exist in the database; the table is made by raw SQL migrations.

    No foreign keys on ``customer_id``/``meter_id``: ingestion validates both in bulk before the
    one insert, and the per-row referential-integrity triggers cost ~40% of ingest throughput
    (measured with the usage benchmark's table). Customers and meters are never deleted through
    the API.
    """

    event_id = Varchar(length=255)
    customer_id = UUID(default=None)
    meter_id = UUID(default=None)
    ts = Timestamptz()
    # The number the meter aggregates: the event's ``value``, or for a SUM/MAX/LATEST meter with
    # a ``property``, that property's number (extracted once at ingestion).
    value = Numeric(default=Decimal(1))
    properties = JSONB(null=True, default=None)
    ingested_at = Timestamptz()
    # Ingestion order: LATEST's tie-break between events with the same timestamp.
    seq = BigSerial()


class UsageEventId(Table, tablename="usage_event_ids"):
    """Every stored event's id, once: its primary key makes ``recordUsage`` idempotent.

    Kept when retention drops a month of raw events, so a late repeat of an old event is still
    a duplicate; a ``DELETE`` of raw events removes their ids (a trigger).
    """

    event_id = Varchar(length=255, primary_key=True)


class UsageRollup(Table, tablename="usage_rollups"):
    """Per (customer, meter, UTC hour): its events' count, sum and max, and its latest event's
    ``(ts, seq, value)`` (the greatest ``(ts, seq)``: LATEST's order).

    Appended by the ingest statement in the same transaction as the events, one row per hour a
    batch touches; an hour's rows add up, and the worker merges them into one
    (:mod:`billing_gql.usage.rollups`). Indexed on ``(customer_id, meter_id, hour)`` and, BRIN,
    on ``id``.
    """

    id = BigSerial(primary_key=True)
    customer_id = UUID(default=None)
    meter_id = UUID(default=None)
    hour = Timestamptz()
    events = BigInt()
    total = Numeric()
    peak = Numeric()
    latest_ts = Timestamptz()
    latest_seq = BigInt()
    latest_value = Numeric()


class UsageRollupState(Table, tablename="usage_rollup_state"):
    """One row: how far the merging of rollup rows got (ids up to ``compacted_to`` were looked
    at; the next pass looks up to ``horizon``, the id sequence's value at the previous one)."""

    id = Integer(primary_key=True)
    compacted_to = BigInt(default=0)
    horizon = BigInt(default=0)


class UsageOutbox(Table, tablename="usage_outbox"):
    """Usage events waiting to be forwarded to a provider that bills usage (one row each)."""

    id = BigSerial(primary_key=True)
    provider = Varchar(length=50)
    event_id = Varchar(length=255)
    status = Varchar(length=20, default="pending")
    attempts = Integer(default=0)
    next_attempt_at = Timestamptz()
    last_error = Text(null=True, default=None)
    created_at = Timestamptz()
    completed_at = Timestamptz(null=True, default=None)
    # The event's key in the partitioned usage_events (NULL for rows queued before it).
    customer_id = UUID(null=True, default=None)
    meter_id = UUID(null=True, default=None)
    event_ts = Timestamptz(null=True, default=None)

    usage_outbox_key = Unique(["provider", "event_id"])
    usage_outbox_status_check = Check("status IN ('pending', 'accepted', 'rejected')")


class UsageThreshold(Table, tablename="usage_thresholds"):
    """A metered entitlement's crossing of 80% or 100% of its limit, once per period."""

    id = UUID(primary_key=True)
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.cascade, null=False)
    feature = Varchar(length=100)
    period_start = Timestamptz()
    threshold = Integer()
    limit_value = Numeric()
    used = Numeric()
    crossed_at = Timestamptz()

    usage_thresholds_key = Unique(["customer_id", "feature", "period_start", "threshold"])
