"""The per-request GraphQL context: who is calling, the runtime, and DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from strawberry.types import Info as _Info

from billing_gql.core.scopes import ALL_SCOPES, Scope

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext


@dataclass(frozen=True)
class Viewer:
    """Who made the request."""

    kind: str
    """``anonymous`` (no token), ``admin`` (a bootstrap key of ``BILLING_GQL_ADMIN_KEYS``),
    ``key`` (an API key), ``customer`` or ``invalid`` (unknown/expired/revoked)."""
    customer_id: UUID | None = None
    expires_at: datetime | None = None
    """When a customer's session token expires (wall clock)."""
    scopes: frozenset[Scope] = frozenset()
    """An operator key's scopes, implications applied (``billing_gql.core.scopes``); which
    root fields it may call is checked against them (``billing_gql.graphql.scopes``)."""
    key_id: str | None = None
    """Who, in the audit log: an API key's id, ``BILLING_GQL_ADMIN_KEYS[i]`` for a bootstrap
    key."""
    key_prefix: str | None = None
    """An API key's visible prefix (``bgk_…``)."""
    bucket: str | None = None
    """The rate-limit bucket of its credential (``key:…``, ``session:…``); ``None`` counts by
    client address."""
    reason: str | None = None
    """Why an ``invalid`` viewer is refused, when it is not an unknown or expired token."""

    @property
    def is_admin(self) -> bool:
        """An operator credential: a bootstrap admin key or an API key of any scope. It reaches
        every customer's data and the operator's own fields; the operations it may call are
        those its scopes allow (checked on every root field before its resolver runs)."""
        return self.kind in ("admin", "key")


ANONYMOUS = Viewer("anonymous")
ADMIN = Viewer("admin", scopes=ALL_SCOPES, key_id="BILLING_GQL_ADMIN_KEYS")
INVALID = Viewer("invalid")
MALFORMED = Viewer(
    "invalid",
    reason='the Authorization header must be "Bearer <token>" (the word Bearer, a '
    "space, then the admin key or session token)",
)


def bootstrap_admin(index: int) -> Viewer:
    """The viewer of the ``index``-th key of ``BILLING_GQL_ADMIN_KEYS``."""
    return Viewer(
        "admin",
        scopes=ADMIN.scopes,
        key_id=f"BILLING_GQL_ADMIN_KEYS[{index}]",
        bucket=f"admin:{index}",
    )


@dataclass
class Context:
    runtime: ServiceContext
    viewer: Viewer
    loaders: dict[str, Any] = field(default_factory=dict)
    """Per-request DataLoaders, created on first use (see ``billing_gql.graphql.loaders``)."""
    precomputed: dict[str, Any] = field(default_factory=dict)
    """Root-field results computed before execution by a bulk fast path (``recordUsage``),
    keyed by field name; the resolver returns them instead of working again."""
    request_id: str | None = None
    """The request's id (``X-Request-Id`` when the client sent a usable one), for the audit
    log."""
    audited: set[str] = field(default_factory=set)
    """Root fields a fast path already recorded in the audit log (the resolver must not)."""


Info = _Info[Context, None]
