"""Usage tables: meters, their provider references, and the usage events they aggregate."""

from __future__ import annotations

from decimal import Decimal

from piccolo.columns import (
    JSONB,
    UUID,
    ForeignKey,
    Numeric,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.constraints import Check, Unique
from piccolo.table import Table

from billing_gql.customers.tables import Customer


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
    # The client's event id is the primary key: a repeat can never be stored twice.
    event_id = Varchar(length=255, primary_key=True)
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.cascade, null=False)
    meter_id = ForeignKey(references=Meter, on_delete=OnDelete.cascade, null=False)
    ts = Timestamptz()
    value = Numeric(default=Decimal(1))
    properties = JSONB(null=True, default=None)
    ingested_at = Timestamptz()
