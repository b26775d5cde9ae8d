"""``strawberry.field``/``strawberry.mutation`` with arguments, typed for mypy.

Used as ``@strawberry.field(description=...)`` they return ``Any`` (that overload has no
resolver yet), which makes every decorated resolver untyped under ``mypy --strict``. These
wrappers return the same objects, typed as decorators that keep the resolver's signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import strawberry

__all__ = ["field", "mutation"]

F = TypeVar("F", bound=Callable[..., Any])


def field(*, description: str | None = None, **options: Any) -> Callable[[F], F]:
    """``@strawberry.field(description=...)``, typed."""
    return cast("Callable[[F], F]", strawberry.field(description=description, **options))


def mutation(*, description: str | None = None, **options: Any) -> Callable[[F], F]:
    """``@strawberry.mutation(description=...)``, typed."""
    return cast("Callable[[F], F]", strawberry.mutation(description=description, **options))
