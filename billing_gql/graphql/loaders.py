"""Per-request DataLoaders, so a page of objects costs a fixed number of queries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from strawberry.dataloader import DataLoader

from billing_gql.graphql.context import Info

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
M = TypeVar("M")
T = TypeVar("T")

Load = Callable[[Info, UUID], Awaitable[M | None]]


def loader(
    info: Info,
    name: str,
    batch: Callable[[Sequence[K]], Awaitable[Sequence[V]]],
) -> DataLoader[K, V]:
    """The request's loader called ``name``, created with ``batch`` on first use."""
    loaders = info.context.loaders
    found = loaders.get(name)
    if found is None:
        found = DataLoader(load_fn=batch)
        loaders[name] = found
    return found


def by_key(items: Sequence[Any], keys: Sequence[K], key: Callable[[Any], K]) -> list[Any]:
    """Order ``items`` to match ``keys`` (``None`` where missing)."""
    index = {key(item): item for item in items}
    return [index.get(k) for k in keys]


def group_by(items: Sequence[Any], keys: Sequence[K], key: Callable[[Any], K]) -> list[list[Any]]:
    """Group ``items`` per key in ``keys`` (empty lists where missing)."""
    groups: dict[K, list[Any]] = {k: [] for k in keys}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [groups[k] for k in keys]


async def related(info: Info, load: Load[M], key: UUID | None, wrap: Callable[..., T]) -> T | None:
    """The object a nullable reference field names: ``load(info, key)`` as ``wrap(model=…)``;
    ``None`` when ``key`` is ``None`` or names nothing."""
    if key is None:
        return None
    model = await load(info, key)
    return wrap(model=model) if model is not None else None


async def related_one(info: Info, load: Load[M], key: UUID, wrap: Callable[..., T]) -> T:
    """The object a non-null reference field names (a foreign key: it always exists)."""
    found = await related(info, load, key, wrap)
    assert found is not None
    return found
