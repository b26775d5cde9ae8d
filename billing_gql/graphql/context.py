"""The per-request GraphQL context: who is calling, the runtime, and DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from strawberry.types import Info as _Info

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext


@dataclass(frozen=True)
class Viewer:
    """Who made the request."""

    kind: str
    """``anonymous`` (no token), ``admin``, ``customer`` or ``invalid`` (unknown/expired)."""
    customer_id: UUID | None = None
    expires_at: datetime | None = None
    """When a customer's session token expires (wall clock)."""
    reason: str | None = None
    """Why an ``invalid`` viewer is refused, when it is not an unknown or expired token."""

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


ANONYMOUS = Viewer("anonymous")
ADMIN = Viewer("admin")
INVALID = Viewer("invalid")
MALFORMED = Viewer(
    "invalid",
    reason='the Authorization header must be "Bearer <token>" (the word Bearer, a '
    "space, then the admin key or session token)",
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


Info = _Info[Context, None]
