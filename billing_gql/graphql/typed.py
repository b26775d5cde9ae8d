"""``strawberry.field``/``strawberry.mutation`` with arguments, typed for mypy, and the scope
declaration of root fields.

Used as ``@strawberry.field(description=...)`` they return ``Any`` (that overload has no
resolver yet), which makes every decorated resolver untyped under ``mypy --strict``. These
wrappers return the same objects, typed as decorators that keep the resolver's signature.

Every Query, Mutation and Subscription field declares the API key scope it needs —
``@typed.field(scope=Scope.READ, …)``, ``@typed.mutation(scope=Scope.ADMIN, …)`` — which the
field's :class:`~billing_gql.graphql.scopes.Guard` enforces (``graphql.scopes``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

import strawberry

from billing_gql.core.scopes import Requirement
from billing_gql.graphql.scopes import Guard, RequiresScope

__all__ = ["field", "mutation"]

F = TypeVar("F", bound=Callable[..., Any])


def _guarded(
    scope: Requirement | None, options: dict[str, Any], *, mutation: bool
) -> dict[str, Any]:
    if scope is None:
        return options
    return {
        **options,
        "extensions": [*options.get("extensions", ()), Guard(scope, mutation=mutation)],
        "directives": [*options.get("directives", ()), RequiresScope(scope=scope.value)],
    }


def field(
    *, description: str | None = None, scope: Requirement | None = None, **options: Any
) -> Callable[[F], F]:
    """``@strawberry.field(description=...)``, typed; a root field (Query, Subscription) gives
    its ``scope``."""
    return cast(
        "Callable[[F], F]",
        strawberry.field(description=description, **_guarded(scope, options, mutation=False)),
    )


def mutation(
    *, scope: Requirement, description: str | None = None, **options: Any
) -> Callable[[F], F]:
    """``@strawberry.mutation(description=...)``, typed, with the API key ``scope`` it needs;
    the call is recorded in the audit log (the resolver must be ``async``)."""
    make = strawberry.mutation(description=description, **_guarded(scope, options, mutation=True))

    def decorate(resolver: F) -> F:
        if not inspect.iscoroutinefunction(resolver):
            raise TypeError(f"mutation {resolver.__name__} must be async (it is audited)")
        return cast("F", make(resolver))

    return decorate
