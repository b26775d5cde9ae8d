"""Proration arithmetic (docs/api.md#proration, docs/api.md#rounding) by hand. Pure.

The whole-subscription behaviour (through ``changePlan``) is in test_subscription_ops.py.
"""

from __future__ import annotations

from functools import partial

import pytest

from billing_gql.subscriptions.plan_change import proration_minor

DAY = 86_400
MONTH_30 = 30 * DAY  # 2_592_000 s


def prorate(
    old: int,
    new: int,
    quantity: int,
    remaining: int,
    period: int,
    currency: str,
    change: bool | None = None,
) -> int:
    call = partial(
        proration_minor,
        old_minor=old,
        new_minor=new,
        quantity=quantity,
        remaining_seconds=remaining,
        period_seconds=period,
        currency=currency,
    )
    # Without ``change`` the call leaves interval_change at its default: the same interval.
    return call() if change is None else call(interval_change=change)


@pytest.mark.parametrize(
    ("old", "new", "quantity", "remaining", "period", "currency", "minor"),
    [
        # (2000 - 1000) x 2 x 1/4 = 500
        (1000, 2000, 2, MONTH_30 // 4, MONTH_30, "USD", 500),
        # (2900 - 990) x 3 x 10 d / 30 d = 1910 x 3 / 3 = 1910
        (990, 2900, 3, 10 * DAY, MONTH_30, "USD", 1910),
        # A downgrade is a credit: (1000 - 2000) x 1 x 1/3 = -333.33 -> -333
        (2000, 1000, 1, 10 * DAY, MONTH_30, "USD", -333),
        # Half a minor unit rounds away from zero: (1001 - 1000) x 1 x 1/2 = 0.5 -> 1
        (1000, 1001, 1, 1, 2, "USD", 1),
        (1001, 1000, 1, 1, 2, "USD", -1),  # -0.5 -> -1
        # 0 decimals: (199000 - 99000) x 1 x 1/3 = 33333.33 dong -> 33333
        (99000, 199000, 1, 10 * DAY, MONTH_30, "VND", 33333),
        # 3 decimals: (2500 - 1000) x 1 x 1/4 = 375 fils (0.375 KWD)
        (1000, 2500, 1, 1, 4, "KWD", 375),
        # A one-second period: all of it remains, (2000 - 1000) x 1 x 1/1 = 1000
        (1000, 2000, 1, 1, 1, "USD", 1000),
        # Nothing remains: 0
        (1000, 2000, 5, 0, MONTH_30, "USD", 0),
    ],
)
def test_same_interval(
    old: int, new: int, quantity: int, remaining: int, period: int, currency: str, minor: int
) -> None:
    assert prorate(old, new, quantity, remaining, period, currency) == minor


@pytest.mark.parametrize(
    ("old", "new", "quantity", "remaining", "period", "minor"),
    [
        # New price in full minus the old plan's remaining time, both times the quantity:
        # 10000 x 3 - 1000 x 3 x 10 d / 30 d = 30000 - 1000 = 29000
        (1000, 10000, 3, 10 * DAY, MONTH_30, 29000),
        # 500 x 2 - 1001 x 2 x 1/3 = 1000 - 667.33 = 332.67 -> 333
        (1001, 500, 2, 10 * DAY, MONTH_30, 333),
        # To a cheaper interval the credit can exceed the charge: 100 x 4 - 1000 x 4 x 1/2
        # = 400 - 2000 = -1600
        (1000, 100, 4, 15 * DAY, MONTH_30, -1600),
        # Half a unit away from zero: 1 x 1 - 3 x 1 x 1/2 = -0.5 -> -1
        (3, 1, 1, 1, 2, -1),
    ],
)
def test_interval_change(
    old: int, new: int, quantity: int, remaining: int, period: int, minor: int
) -> None:
    assert prorate(old, new, quantity, remaining, period, "USD", True) == minor


@pytest.mark.parametrize(
    ("interval_change", "minor"),
    [
        # No current period (period 0 s, as for a subscription without one): no time remains,
        # so the same interval prorates nothing ...
        (False, 0),
        # ... and an interval change charges the new price in full: 1500 x 3 = 4500.
        (True, 4500),
    ],
)
def test_no_current_period(interval_change: bool, minor: int) -> None:
    # old 1000, new 1500, quantity 3; 0 s remaining of a 0 s period
    assert prorate(1000, 1500, 3, 0, 0, "USD", interval_change) == minor
