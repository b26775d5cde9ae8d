"""Authorization checks every root resolver calls first (docs/api.md#authentication).

- public fields: anyone, but a token that was sent and is unknown/expired → UNAUTHENTICATED;
- admin fields: an admin key; a customer token → FORBIDDEN; nothing → UNAUTHENTICATED;
- customer fields: an admin, or a customer token for that very customer (else FORBIDDEN).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import TypeVar
from uuid import UUID

from billing_gql.customers.service import parse_uuid
from billing_gql.graphql.context import ADMIN, ANONYMOUS, INVALID, Context, Info, Viewer
from billing_gql.graphql.errors import Forbidden, InvalidInput, Unauthenticated

T = TypeVar("T")


def admin_only(info: Info, value: T) -> T | None:
    """``value`` for an admin, ``None`` for anyone else (the operator's own data and references
    at providers, on objects a customer token may read)."""
    return value if info.context.viewer.is_admin else None


def _fail_unauthenticated(viewer: Viewer) -> None:
    if viewer.kind == "invalid":
        raise Unauthenticated(viewer.reason or "the token is unknown or expired")
    if viewer.kind == "anonymous":
        raise Unauthenticated("this field needs an admin key or a customer session token")


def require_public(info: Info) -> Viewer:
    """Public fields: refused only when a bad token was sent."""
    viewer = info.context.viewer
    if viewer.kind == "invalid":
        raise Unauthenticated(viewer.reason or "the token is unknown or expired")
    return viewer


def require_admin(info: Info) -> Viewer:
    """An operator key: a bootstrap admin key or an API key (whose scopes were checked for this
    field before the resolver ran, ``graphql.scopes``)."""
    viewer = info.context.viewer
    _fail_unauthenticated(viewer)
    if not viewer.is_admin:
        raise Forbidden("this field needs an admin key")
    return viewer


def require_viewer(info: Info) -> Viewer:
    """Admin or customer (anything authenticated)."""
    return require_viewer_of(info.context)


def require_viewer_of(context: Context) -> Viewer:
    """:func:`require_viewer` for code that has the context rather than the resolver info."""
    viewer = context.viewer
    _fail_unauthenticated(viewer)
    return viewer


def require_customer(info: Info, customer_id: UUID | None) -> Viewer:
    """Admin, or the customer ``customer_id`` itself; ``None`` (no such customer) is allowed
    for admins only, so a customer cannot probe other ids."""
    return require_customer_of(info.context, customer_id)


def list_owner(info: Info, customer_id: str | None) -> UUID | None:
    """Whose rows a list field answers: ``customerId`` when given (an admin, or that very
    customer), else the customer viewing; ``None`` (every customer) for an admin."""
    viewer = require_viewer(info)
    if customer_id is None:
        return None if viewer.is_admin else viewer.customer_id
    owner = parse_uuid(customer_id)
    require_customer(info, owner)
    if owner is None:
        raise InvalidInput("customerId is not a valid id")
    return owner


def require_customer_of(context: Context, customer_id: UUID | None) -> Viewer:
    """:func:`require_customer` for code that has the context rather than the resolver info."""
    viewer = require_viewer_of(context)
    if viewer.is_admin:
        return viewer
    if customer_id is None or viewer.customer_id != customer_id:
        raise Forbidden("a customer token reaches only its own customer")
    return viewer


def match_admin_key(candidate: str, keys: Sequence[str]) -> bool:
    """Constant-time comparison against every configured admin key."""
    return match_admin_key_index(candidate, keys) is not None


def match_admin_key_index(candidate: str, keys: Sequence[str]) -> int | None:
    """The position of ``candidate`` among the configured admin keys, else ``None``; every key
    is compared, in constant time."""
    found: int | None = None
    encoded = candidate.encode("utf-8")
    for index, key in enumerate(keys):
        if hmac.compare_digest(encoded, key.encode("utf-8")) and found is None:
            found = index
    return found


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header ("" when malformed), else ``None``."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


__all__ = [
    "ADMIN",
    "ANONYMOUS",
    "INVALID",
    "bearer_token",
    "match_admin_key",
    "match_admin_key_index",
    "require_admin",
    "require_customer",
    "require_public",
    "require_viewer",
]
