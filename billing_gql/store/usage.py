"""Usage tables: meters, their provider references, and the usage events they aggregate."""

from __future__ import annotations

from decimal import Decimal

from piccolo.columns import (
    JSONB,
    UUID,
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

    No foreign keys on ``customer_id``/``meter_id``: ingestion validates both in bulk before the
    one ``INSERT … ON CONFLICT DO NOTHING``, and the per-row referential-integrity triggers cost
    ~40% of ingest throughput (measured with the usage benchmark's table). Customers and meters
    are never deleted through the API.
    """

    # The client's event id is the primary key: a repeat can never be stored twice.
    event_id = Varchar(length=255, primary_key=True)
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
