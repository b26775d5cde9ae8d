"""Access tables: scoped API keys, the audit log of mutations, rate-limit counters.

Declarations only (the migrations and the Piccolo app read them); their one writer is
``billing_gql.access`` (keys, audit, rate limits).
"""

from __future__ import annotations

from piccolo.columns import JSONB, UUID, Array, Bytea, Integer, Text, Timestamptz, Varchar
from piccolo.table import Table


class ApiKey(Table, tablename="api_keys"):
    id = UUID(primary_key=True)
    name = Text()
    scopes = Array(base_column=Text())
    # The secret's visible part ("bgk_" + 8 characters): names the key in lists and logs.
    prefix = Varchar(length=32, unique=True)
    # sha256 of the whole secret; the secret itself is shown once and never stored.
    secret_hash = Bytea()
    created_at = Timestamptz()
    expires_at = Timestamptz(null=True, default=None)
    last_used_at = Timestamptz(null=True, default=None)
    revoked_at = Timestamptz(null=True, default=None)
    rotated_at = Timestamptz(null=True, default=None)


class AuditEntry(Table, tablename="audit_log"):
    id = UUID(primary_key=True)
    at = Timestamptz()
    actor_kind = Varchar(length=20)
    """``admin_key`` (a bootstrap key), ``api_key`` or ``customer``."""
    actor = Text()
    """The key's id (``BILLING_GQL_ADMIN_KEYS[i]`` for a bootstrap key), or the customer's."""
    actor_label = Text(null=True, default=None)
    """The key's visible prefix."""
    field = Text()
    operation_name = Text(null=True, default=None)
    arguments = JSONB()
    result = Varchar(length=20)
    error_codes = Array(base_column=Text())
    request_id = Text(null=True, default=None)


class RateLimitCounter(Table, tablename="rate_limit_counters"):
    bucket = Text(primary_key=True)
    window_start = Timestamptz()
    hits = Integer()
