"""Per-request DataLoaders, so a page of objects costs a fixed number of queries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from billing_gql.graphql.context import Info

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


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
