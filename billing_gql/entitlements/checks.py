"""The entitlement checks the faces call: answered by the process's
:class:`~billing_gql.entitlements.cache.EntitlementCache` when it holds the answer, else by
:mod:`billing_gql.entitlements.service` (and stored, under the cache's coherence rules).

The cache is installed by the composition root (:func:`install_cache`) when
``BILLING_GQL_ENTITLEMENT_CACHE_SIZE`` is above 0; without it every check reads the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from billing_gql.clock import wall_now
from billing_gql.context import ServiceContext
from billing_gql.entitlements import service
from billing_gql.entitlements.cache import EntitlementCache
from billing_gql.entitlements.listener import CacheListener
from billing_gql.entitlements.service import Entitlement

__all__ = [
    "cache_figures",
    "cache_of",
    "check",
    "check_all",
    "close_cache",
    "install_cache",
    "listener_of",
    "note_write",
]

_CACHE = "entitlements.cache"
_LISTENER = "entitlements.listener"


async def install_cache(ctx: ServiceContext, size: int) -> None:
    """Create the process's cache and start its listener (no cache when ``size`` is 0)."""
    if size <= 0:
        return
    cache = EntitlementCache(size)
    listener = CacheListener(ctx.db.url, cache)
    ctx.extras[_CACHE] = cache
    ctx.extras[_LISTENER] = listener
    await listener.start()


async def close_cache(ctx: ServiceContext) -> None:
    ctx.extras.pop(_CACHE, None)
    listener = ctx.extras.pop(_LISTENER, None)
    if isinstance(listener, CacheListener):
        await listener.close()


def cache_of(ctx: ServiceContext) -> EntitlementCache | None:
    cache = ctx.extras.get(_CACHE)
    return cache if isinstance(cache, EntitlementCache) else None


def listener_of(ctx: ServiceContext) -> CacheListener | None:
    listener = ctx.extras.get(_LISTENER)
    return listener if isinstance(listener, CacheListener) else None


async def _now(ctx: ServiceContext, cache: EntitlementCache) -> datetime:
    """Billing time; on the test clock the stored time, kept in the cache."""
    if not ctx.clock.test_clock:
        return wall_now()
    cached = cache.clock()
    if cached is not None:
        return cached
    token = cache.token()
    value = await ctx.clock.now()
    cache.put_clock(token, value)
    return value


FENCE_SECONDS = 1.0


def note_write(ctx: ServiceContext) -> None:
    """This process just committed a change (a mutation, a webhook delivery): the next check
    first waits for the listener to have processed its notification (:func:`_fenced`), so a
    client reads its own writes through the same process."""
    cache = ctx.extras.get(_CACHE)
    if isinstance(cache, EntitlementCache):
        cache.local_writes += 1


async def _fenced(ctx: ServiceContext, cache: EntitlementCache) -> bool:
    """After a change made here, wait until the listener has processed every notification
    committed before now (a ``sync`` marker round trip); ``False``: it did not answer in time
    (the check then reads the database)."""
    target = cache.local_writes
    if cache.fenced >= target:
        return True
    listener = ctx.extras.get(_LISTENER)
    if not isinstance(listener, CacheListener):
        return False
    try:
        await asyncio.wait_for(listener.sync(ctx.db.pool), FENCE_SECONDS)
    except Exception:
        return False
    cache.fenced = max(cache.fenced, target)
    return True


async def check(
    ctx: ServiceContext,
    *,
    feature: str,
    customer_id: UUID | None = None,
    external_id: str | None = None,
) -> tuple[UUID | None, Entitlement]:
    """:func:`service.entitlement`, from the cache when it can: the customer's id (``None``
    when unknown) and its entitlement to ``feature``."""
    cache = ctx.extras.get(_CACHE)
    if not isinstance(cache, EntitlementCache) or not cache.live or not await _fenced(ctx, cache):
        if cache is not None:
            cache.stats.bypassed += 1
        return await service.entitlement(
            ctx.db.pool,
            feature=feature,
            now=ctx.clock.now,
            customer_id=customer_id,
            external_id=external_id,
        )
    uid = customer_id if customer_id is not None else cache.customer_of(external_id or "")
    if uid is not None:
        hit = cache.one(uid, feature, await _now(ctx, cache))
        if hit is not None:
            cache.stats.hits += 1
            return uid, hit
    cache.stats.misses += 1
    token = cache.token()
    found, value = await service.entitlement(
        ctx.db.pool,
        feature=feature,
        now=lambda: _now(ctx, cache),
        customer_id=customer_id,
        external_id=external_id,
    )
    if found is not None:
        cache.put_one(token, found, feature, value, external_id)
    return found, value


async def check_all(
    ctx: ServiceContext, customer_ids: Sequence[UUID]
) -> dict[UUID, list[Entitlement]]:
    """:func:`service.entitlements`, from the cache for the customers it holds."""
    cache = ctx.extras.get(_CACHE)
    if not isinstance(cache, EntitlementCache) or not cache.live or not await _fenced(ctx, cache):
        if cache is not None:
            cache.stats.bypassed += 1
        return await service.entitlements(ctx.db.pool, customer_ids, now=ctx.clock.now)
    now = await _now(ctx, cache)
    out: dict[UUID, list[Entitlement]] = {}
    missing: list[UUID] = []
    for uid in customer_ids:
        hit = cache.all(uid, now)
        if hit is None:
            missing.append(uid)
        else:
            out[uid] = hit
    cache.stats.hits += len(out)
    if missing:
        cache.stats.misses += len(missing)
        token = cache.token()
        found = await service.entitlements(ctx.db.pool, missing, now=lambda: _now(ctx, cache))
        for uid in missing:
            values = found.get(uid, [])
            cache.put_all(token, uid, values)
            out[uid] = values
    return out


def cache_figures(ctx: ServiceContext) -> dict[str, int] | None:
    """The cache's figures for ``GET /metrics`` (names of ``metrics.ENTITLEMENT_CACHE_FIGURES``),
    ``None`` when the cache is off (``BILLING_GQL_ENTITLEMENT_CACHE_SIZE=0``)."""
    cache, listener = cache_of(ctx), listener_of(ctx)
    if cache is None or listener is None:
        return None
    stats = cache.stats
    return {
        "entries": len(cache),
        "size": cache.size,
        "listener_connected": int(cache.live),
        "synced": listener.synced,
        "hits": stats.hits,
        "misses": stats.misses,
        "bypassed": stats.bypassed,
        "refused": stats.refused,
        "invalidations": stats.invalidations,
        "clears": stats.clears,
    }
