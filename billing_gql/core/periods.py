"""Billing periods (docs/api.md#periods): UTC; MONTH and YEAR keep the anchor's day of month
(Jan 31 → Feb 28 → Mar 31), DAY and WEEK are fixed lengths; ``intervalCount`` multiplies.

Every boundary is computed from the anchor, never from the previous boundary, so a short month
does not pull later periods' day back (Feb 28 is followed by Mar 31, not Mar 28).
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

from billing_gql.money import shown

__all__ = ["boundary", "next_period_end", "shift"]


def shift(anchor: datetime, interval: str, steps: int) -> datetime:
    """``anchor`` moved by ``steps`` whole intervals (``steps`` may be 0 or negative)."""
    anchor = anchor.astimezone(UTC)
    if interval == "DAY":
        return anchor + timedelta(days=steps)
    if interval == "WEEK":
        return anchor + timedelta(weeks=steps)
    if interval in ("MONTH", "YEAR"):
        months = steps * (12 if interval == "YEAR" else 1)
        index = anchor.year * 12 + (anchor.month - 1) + months
        year, month = divmod(index, 12)
        month += 1
        day = min(anchor.day, calendar.monthrange(year, month)[1])
        return anchor.replace(year=year, month=month, day=day)
    raise ValueError(f"interval {shown(interval)} has no periods")


def boundary(anchor: datetime, interval: str, interval_count: int, k: int) -> datetime:
    """The ``k``-th period boundary after ``anchor`` (``k = 0`` is the anchor itself)."""
    return shift(anchor, interval, k * interval_count)


def next_period_end(
    anchor: datetime, interval: str, interval_count: int, after: datetime
) -> datetime:
    """The first boundary of the anchor's series strictly after ``after``."""
    if interval_count < 1:
        raise ValueError("interval_count must be at least 1")
    # Estimate the index from the elapsed time, then step to the exact boundary.
    approx_days = {"DAY": 1, "WEEK": 7, "MONTH": 28, "YEAR": 365}[interval] * interval_count
    elapsed = (after - anchor).total_seconds() / 86400
    k = max(int(elapsed // approx_days) - 1, 1) if elapsed > 0 else 1
    while k > 1 and boundary(anchor, interval, interval_count, k - 1) > after:
        k -= 1
    while boundary(anchor, interval, interval_count, k) <= after:
        k += 1
    return boundary(anchor, interval, interval_count, k)
