"""Catalog tables: plans, their prices, feature grants, usage charges and provider references."""

from __future__ import annotations

from decimal import Decimal

from piccolo.columns import (
    JSONB,
    UUID,
    BigInt,
    Boolean,
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
from billing_gql.store.usage import Meter


class Plan(Table, tablename="plans"):
    id = UUID(primary_key=True)
    code = Varchar(length=100, unique=True)
    name = Text()
    description = Text(null=True, default=None)
    interval = Varchar(length=10)
    interval_count = Integer(default=1)
    trial_days = Integer(default=0)
    archived = Boolean(default=False)
    # Private: not listed publicly; sold only through an admin's checkout or to customers
    # granted access (``plan_access``).
    private = Boolean(default=False)
    created_at = Timestamptz()
    updated_at = Timestamptz()

    plans_interval_check = Check("interval IN ('DAY', 'WEEK', 'MONTH', 'YEAR', 'ONE_TIME')")
    plans_interval_count_check = Check("interval_count >= 1")
    plans_trial_days_check = Check("trial_days >= 0")


class PlanAccess(Table, tablename="plan_access"):
    """A customer may buy a private plan (``grantPlanAccess``)."""

    id = UUID(primary_key=True)
    plan_id = ForeignKey(references=Plan, on_delete=OnDelete.cascade, null=False)
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.cascade, null=False)
    created_at = Timestamptz()

    plan_access_key = Unique(["plan_id", "customer_id"])


class PlanPrice(Table, tablename="plan_prices"):
    id = UUID(primary_key=True)
    plan_id = ForeignKey(references=Plan, on_delete=OnDelete.cascade, null=False)
    currency = Varchar(length=3)
    amount_minor = BigInt()
    position = Integer(default=0)

    plan_prices_plan_currency_key = Unique(["plan_id", "currency"])
    plan_prices_amount_check = Check("amount_minor >= 0")


class PlanFeature(Table, tablename="plan_features"):
    id = UUID(primary_key=True)
    plan_id = ForeignKey(references=Plan, on_delete=OnDelete.cascade, null=False)
    feature = Varchar(length=100)
    enabled = Boolean(default=True)
    limit_value = Numeric(null=True, default=None)
    position = Integer(default=0)

    plan_features_plan_feature_key = Unique(["plan_id", "feature"])


class UsageCharge(Table, tablename="usage_charges"):
    id = UUID(primary_key=True)
    plan_id = ForeignKey(references=Plan, on_delete=OnDelete.cascade, null=False)
    meter_id = ForeignKey(references=Meter, on_delete=OnDelete.restrict, null=False)
    model = Varchar(length=10)
    currency = Varchar(length=3)
    unit_amount = Numeric(null=True, default=None)
    tiers = JSONB(null=True, default=None)
    package_size = Integer(null=True, default=None)
    included_quantity = Numeric(default=Decimal(0))
    position = Integer(default=0)
    # The charge's references at providers that bill usage through one per charge (a Stripe
    # metered price): ``[{"provider": "stripe", "ref": "price_…", "currency": "USD"}]``.
    provider_refs = JSONB(default=[])

    usage_charges_model_check = Check("model IN ('PER_UNIT', 'GRADUATED', 'VOLUME', 'PACKAGE')")


class PlanProviderRef(Table, tablename="plan_provider_refs"):
    id = UUID(primary_key=True)
    plan_id = ForeignKey(references=Plan, on_delete=OnDelete.cascade, null=False)
    provider = Varchar(length=50)
    ref = Varchar(length=255, index=True)  # type: ignore[assignment]  # shadows Table.ref()
    currency = Varchar(length=3, null=True, default=None)

    plan_provider_refs_key = Unique(["plan_id", "provider", "currency"], nulls_distinct=False)
