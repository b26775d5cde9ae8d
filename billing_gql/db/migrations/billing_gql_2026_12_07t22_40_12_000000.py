"""Scoped API keys (stored hashed), the audit log of mutations, and the rate-limit counters
shared by every server process (UNLOGGED: counters need no crash safety nor WAL)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-12-07T22:40:12:000000"
VERSION = "1.38.0"
DESCRIPTION = "api_keys, audit_log, rate_limit_counters"

STATEMENTS = [
    "CREATE TABLE api_keys ("
    " id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " name text NOT NULL,"
    " scopes text[] NOT NULL,"
    " prefix varchar(32) NOT NULL UNIQUE,"
    " secret_hash bytea NOT NULL,"
    " created_at timestamptz NOT NULL,"
    " expires_at timestamptz NULL,"
    " last_used_at timestamptz NULL,"
    " revoked_at timestamptz NULL,"
    " rotated_at timestamptz NULL,"
    " CONSTRAINT api_keys_scopes_check CHECK (cardinality(scopes) > 0 AND scopes <@"
    " ARRAY['admin', 'read', 'usage:write', 'entitlements:read', 'webhooks:manage']::text[]))",
    "CREATE TABLE audit_log ("
    " id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " at timestamptz NOT NULL,"
    " actor_kind varchar(20) NOT NULL,"
    " actor text NOT NULL,"
    " actor_label text NULL,"
    " field text NOT NULL,"
    " operation_name text NULL,"
    " arguments jsonb NOT NULL,"
    " result varchar(20) NOT NULL,"
    " error_codes text[] NOT NULL DEFAULT '{}',"
    " request_id text NULL,"
    " CONSTRAINT audit_log_actor_kind_check CHECK (actor_kind IN ('admin_key', 'api_key',"
    " 'customer')),"
    " CONSTRAINT audit_log_result_check CHECK (result IN ('ok', 'user_errors', 'error')))",
    "CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC)",
    "CREATE INDEX audit_log_actor_idx ON audit_log (actor, at DESC, id DESC)",
    "CREATE INDEX audit_log_field_idx ON audit_log (field, at DESC, id DESC)",
    "CREATE UNLOGGED TABLE rate_limit_counters ("
    " bucket text PRIMARY KEY,"
    " window_start timestamptz NOT NULL,"
    " hits integer NOT NULL)",
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="billing_gql", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        assert engine is not None
        for statement in STATEMENTS:
            await engine.run_ddl(statement)

    manager.add_raw(run)
    return manager
