"""Who is calling: the viewer of an ``Authorization: Bearer …`` header.

- a key of ``BILLING_GQL_ADMIN_KEYS`` (compared in constant time, no database work): admin;
- ``bgk_…``: an API key, looked up by its prefix and compared in constant time
  (:func:`billing_gql.access.keys.key_for_secret`): an operator with the key's scopes;
- ``bgcs_…``: a customer session token;
- anything else, or a revoked, expired or unknown credential: ``invalid``.
"""

from __future__ import annotations

from billing_gql.access.keys import SECRET_PREFIX, key_for_secret
from billing_gql.context import ServiceContext
from billing_gql.core.scopes import effective_scopes
from billing_gql.customers.service import hash_token, session_for_token
from billing_gql.graphql.auth import bearer_token, match_admin_key_index
from billing_gql.graphql.context import ANONYMOUS, INVALID, MALFORMED, Viewer, bootstrap_admin
from billing_gql.logs import current_request_id, request_id_for

__all__ = ["request_id", "resolve_viewer"]


async def resolve_viewer(runtime: ServiceContext, authorization: str | None) -> Viewer:
    """Who is calling, from the Authorization header."""
    token = bearer_token(authorization)
    if token is None:
        return ANONYMOUS
    if not token:
        return MALFORMED
    index = match_admin_key_index(token, runtime.settings.auth.admin_keys)
    if index is not None:
        return bootstrap_admin(index)
    if token.startswith(SECRET_PREFIX):
        key = await key_for_secret(runtime.db, token)
        if key is None:
            return INVALID
        return Viewer(
            "key",
            scopes=effective_scopes(key.scopes),
            key_id=str(key.id),
            key_prefix=key.prefix,
            bucket=f"key:{key.id}",
        )
    session = await session_for_token(runtime.db, token)
    if session is None:
        return INVALID
    return Viewer(
        "customer",
        session[0],
        expires_at=session[1],
        bucket=f"session:{hash_token(token)[:32]}",
    )


def request_id(header: str | None) -> str:
    """The request's id: the one the HTTP middleware made current
    (:func:`billing_gql.web.observe.request_id_middleware`, also returned in the response's
    ``X-Request-ID``), else the client's ``X-Request-ID`` when it is a sane token, else a new
    random id."""
    return current_request_id() or request_id_for(header)
