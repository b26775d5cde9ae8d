"""Rate limits shared by every server process: one counter row per bucket in PostgreSQL.

A bucket is a key (``key:<id>``), a customer session token (``session:<sha256>``), a client
address (``addr:<ip>``) or a provider's webhook route (``webhook:<name>``). Each request adds
one to its bucket's counter for the current fixed window — one ``INSERT … ON CONFLICT DO
UPDATE`` on an UNLOGGED table (no WAL, counters need no crash safety), windows aligned on the
database's clock so every process agrees — and is refused once the count passes the limit,
with the seconds left in the window as ``Retry-After``. A fixed window lets a client send up
to twice the limit across a window boundary; that is the price of one cheap statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from billing_gql.db.database import Database
from billing_gql.settings import RateLimit

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext

__all__ = ["Decision", "delete_stale_counters", "hit"]

_HIT_SQL = (
    "INSERT INTO rate_limit_counters AS c (bucket, window_start, hits) "
    "VALUES ($1, to_timestamp(floor(extract(epoch FROM clock_timestamp()) / $2) * $2), 1) "
    "ON CONFLICT (bucket) DO UPDATE SET "
    # A statement that computed an older window (it raced the boundary) counts in the newer.
    "hits = CASE WHEN EXCLUDED.window_start > c.window_start THEN 1 "
    "ELSE least(c.hits, 2000000000) + 1 END, "
    "window_start = greatest(c.window_start, EXCLUDED.window_start) "
    "RETURNING hits, "
    "ceil(extract(epoch FROM window_start - clock_timestamp()) + $2)::int AS retry_after"
)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int
    """Seconds until the window ends (at least 1)."""


async def hit(db: Database, bucket: str, limit: RateLimit) -> Decision:
    """Count one request in ``bucket``; whether it is within ``limit``."""
    row = await db.fetchrow(_HIT_SQL, bucket, limit.window_seconds)
    assert row is not None
    return Decision(allowed=row["hits"] <= limit.requests, retry_after=max(1, row["retry_after"]))


async def delete_stale_counters(runtime: ServiceContext, now: datetime) -> int:
    """Sweep: forget counters of windows that started over a day ago (the longest window is a
    day). Counters live on the wall clock, so the database's clock decides, not ``now``."""
    status = await runtime.db.execute(
        "DELETE FROM rate_limit_counters WHERE window_start < clock_timestamp() - interval '1 day'"
    )
    return int(status.rsplit(" ", 1)[-1])
