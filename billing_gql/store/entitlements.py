"""Provider grants: benefits a provider granted a customer (e.g. Polar benefits), mapped to
our features by the ``map_provider_grant`` hook when a ``grant.updated`` event is applied."""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    Boolean,
    ForeignKey,
    Numeric,
    OnDelete,
    Timestamptz,
    Varchar,
)
from piccolo.constraints import Unique
from piccolo.table import Table

from billing_gql.store.customers import Customer


class ProviderGrant(Table, tablename="provider_grants"):
    id = UUID(primary_key=True)
    provider = Varchar(length=50)
    grant_id = Varchar(length=255)
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.cascade, null=False)
    benefit_id = Varchar(length=255)
    benefit_type = Varchar(length=100)
    granted = Boolean(default=True)
    provider_subscription_id = Varchar(length=255, null=True, default=None)
    metadata = JSONB(null=True, default=None)
    # The provider's time of the newest state applied; older events never regress the row.
    provider_updated_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()

    provider_grants_key = Unique(["provider", "grant_id"])


class ProviderGrantFeature(Table, tablename="provider_grant_features"):
    """The features a live grant gives (rows exist only while the grant is granted), kept
    flat so the entitlement check reads them by (customer, feature) without decoding JSON."""

    id = UUID(primary_key=True)
    grant_id = ForeignKey(references=ProviderGrant, on_delete=OnDelete.cascade, null=False)
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.cascade, null=False)
    feature = Varchar(length=100)
    enabled = Boolean(default=True)
    limit_value = Numeric(null=True, default=None)
