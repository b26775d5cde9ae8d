"""Every root field declares the API key scope it needs; this enforces it.

Declared with the decorator that makes the field (``billing_gql.graphql.typed``)::

    @typed.field(scope=Scope.READ, description="…")            # a query (PUBLIC: anyone)
    @typed.mutation(scope=Scope.ADMIN, description="…")        # a mutation (scope required)

which attaches :class:`Guard` to the field (and shows ``@requiresScope(scope: "read")`` in the
SDL). Before the resolver runs, the guard refuses an operator key lacking the scope with
``FORBIDDEN`` (a GraphQL error on that field, as every auth refusal); customer session tokens and
anonymous callers are left to the resolver's own rules (``graphql.auth``). On mutations it also
records the call in the audit log (``graphql.audit``), refusals included.
``tests/graphql/test_scopes.py`` walks the schema and fails on a root field without a scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import strawberry
from strawberry.extensions.field_extension import FieldExtension
from strawberry.schema_directive import Location
from strawberry.types import Info as StrawberryInfo
from strawberry.types.field import StrawberryField

from billing_gql.core.scopes import PUBLIC, Requirement
from billing_gql.graphql.audit import audited
from billing_gql.graphql.context import Viewer
from billing_gql.graphql.errors import Forbidden

__all__ = ["Guard", "RequiresScope", "declared_scope", "refuses", "require_scope"]


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    description="The API key scope this operation needs (admin implies every scope, read "
    "implies entitlements:read; public: anyone).",
)
class RequiresScope:
    scope: str


def refuses(viewer: Viewer, scope: Requirement) -> bool:
    """Whether ``viewer`` is an operator key without ``scope`` (other viewers are left to the
    resolver's rules)."""
    return viewer.is_admin and scope is not PUBLIC and scope not in viewer.scopes


def require_scope(viewer: Viewer, scope: Requirement, field: str) -> None:
    """FORBIDDEN for an operator key without ``scope``."""
    if refuses(viewer, scope):
        held = ", ".join(sorted(str(s) for s in viewer.scopes))
        raise Forbidden(
            f"{field} needs an API key with the {scope.value!r} scope (this key has: {held})"
        )


class Guard(FieldExtension):
    """The scope check (and, on mutations, the audit record) of one root field."""

    def __init__(self, scope: Requirement, *, mutation: bool = False) -> None:
        self.scope = scope
        self.mutation = mutation

    def resolve(
        self, next_: Callable[..., Any], source: Any, info: StrawberryInfo, **kwargs: Any
    ) -> Any:
        require_scope(info.context.viewer, self.scope, info.field_name)
        return next_(source, info, **kwargs)

    async def resolve_async(
        self,
        next_: Callable[..., Awaitable[Any]],
        source: Any,
        info: StrawberryInfo,
        **kwargs: Any,
    ) -> Any:
        if not self.mutation:
            require_scope(info.context.viewer, self.scope, info.field_name)
            return await next_(source, info, **kwargs)

        async def call() -> Any:
            require_scope(info.context.viewer, self.scope, info.field_name)
            return await next_(source, info, **kwargs)

        return await audited(info, call)


def declared_scope(field: StrawberryField) -> Requirement | None:
    """The scope a field declared, if any."""
    for extension in field.extensions:
        if isinstance(extension, Guard):
            return extension.scope
    return None
