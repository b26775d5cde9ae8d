"""API key scopes: what an operator credential may call (docs/api.md#api-keys-and-scopes).

Every root field of the schema (each Query, Mutation and Subscription field) declares the one
scope a key needs to call it (``billing_gql.graphql.typed``). A key holds one or more scopes;
``admin`` implies every scope and ``read`` implies ``entitlements:read``. The bootstrap keys
of ``BILLING_GQL_ADMIN_KEYS`` hold ``admin``. Customer session tokens have no scopes: the
operations they reach are decided by their own rules (their own customer's objects).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

__all__ = ["ALL_SCOPES", "PUBLIC", "Public", "Requirement", "Scope", "effective_scopes"]


class Scope(StrEnum):
    ADMIN = "admin"
    """Everything (implies every other scope)."""
    READ = "read"
    """Every query: read-only access to all data (implies ``entitlements:read``)."""
    USAGE_WRITE = "usage:write"
    """``recordUsage``."""
    ENTITLEMENTS_READ = "entitlements:read"
    """``entitlement`` and ``entitlements``: what a backend asks on every request."""
    WEBHOOKS_MANAGE = "webhooks:manage"
    """Outgoing webhook endpoints, and replaying provider deliveries."""


class Public(StrEnum):
    PUBLIC = "public"


PUBLIC = Public.PUBLIC
"""Not a key's scope: what fields anyone may call declare (``plans``, ``plan``,
``providers``); every key may call them too."""

Requirement = Scope | Public
"""What a root field declares: the scope a key needs, or :data:`PUBLIC`."""

ALL_SCOPES = frozenset(Scope)

_IMPLIES: dict[Scope, frozenset[Scope]] = {
    Scope.ADMIN: ALL_SCOPES,
    Scope.READ: frozenset({Scope.READ, Scope.ENTITLEMENTS_READ}),
}


def effective_scopes(granted: Iterable[str]) -> frozenset[Scope]:
    """The scopes a key holding ``granted`` may use (implications applied; unknown names
    ignored)."""
    found: set[Scope] = set()
    for name in granted:
        try:
            scope = Scope(name)
        except ValueError:
            continue
        found |= _IMPLIES.get(scope, frozenset({scope}))
    return frozenset(found)
