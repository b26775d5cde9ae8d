"""Customer tables: customers, their session tokens and their ids at providers."""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    ForeignKey,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.constraints import Unique
from piccolo.table import Table


class Customer(Table, tablename="customers"):
    id = UUID(primary_key=True)
    external_id = Varchar(length=255, unique=True)
    email = Text(null=True, default=None)
    name = Text(null=True, default=None)
    country = Varchar(length=2, null=True, default=None)
    currency = Varchar(length=3, null=True, default=None)
    metadata = JSONB(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    # Set by deleteCustomer: personal data erased, financial records kept.
    deleted_at = Timestamptz(null=True, default=None)


class CustomerSession(Table, tablename="customer_sessions"):
    id = UUID(primary_key=True)
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.cascade, null=False)
    # sha256 of the token; the token itself is shown once and never stored.
    token_hash = Varchar(length=64, unique=True)
    expires_at = Timestamptz()
    created_at = Timestamptz()


class CustomerProviderAccount(Table, tablename="customer_provider_accounts"):
    id = UUID(primary_key=True)
    customer_id = ForeignKey(references=Customer, on_delete=OnDelete.cascade, null=False)
    provider = Varchar(length=50)
    provider_customer_id = Varchar(length=255)
    created_at = Timestamptz()

    customer_provider_accounts_customer_key = Unique(["customer_id", "provider"])
    customer_provider_accounts_ref_key = Unique(["provider", "provider_customer_id"])
