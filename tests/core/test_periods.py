"""Period arithmetic (docs/api.md#periods) against hand-computed boundaries.

Pure: no database. Boundary ``k`` of a series is the anchor moved by ``k x intervalCount``
intervals; MONTH and YEAR keep the anchor's day (clamped to the month's length), in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from billing_gql.core import periods
from billing_gql.core.periods import boundary, next_period_end, shift

A = datetime(2027, 1, 31, 12, 0, 0, tzinfo=UTC)  # anchored on the 31st, at noon


@pytest.mark.parametrize(
    ("after", "end"),
    [
        # 2027-01-31 -> 2029-01-31 is 365 + 366 (2028 is leap) = 731 days = boundary 24; then
        # 2029-02-28 (+28 days) is boundary 25 and 2029-03-31 (+31 days, 790 days) boundary 26.
        # One second before boundary 26 the 28-day estimate is 789.99 // 28 - 1 = 27, one past:
        # the computation must step back to 26.
        (datetime(2029, 3, 31, 11, 59, 59, tzinfo=UTC), datetime(2029, 3, 31, 12, tzinfo=UTC)),
        # Exactly on boundary 26 the next is 27 (Apr has 30 days: the day is clamped to 30).
        (datetime(2029, 3, 31, 12, tzinfo=UTC), datetime(2029, 4, 30, 12, tzinfo=UTC)),
        # 2029-04-30 11:00 is 790 + 30 days - 1 h: estimate 819.96 // 28 - 1 = 28, answer 27.
        (datetime(2029, 4, 30, 11, tzinfo=UTC), datetime(2029, 4, 30, 12, tzinfo=UTC)),
        # Five years: 2027-01-31 -> 2032-01-31 is 5 x 365 + 1 (Feb 29 2028) = 1826 days =
        # boundary 60. One hour before it the estimate is 1825.96 // 28 - 1 = 64, four past.
        (datetime(2032, 1, 31, 11, tzinfo=UTC), datetime(2032, 1, 31, 12, tzinfo=UTC)),
        # 2032 is leap: boundary 61 is Feb 29, and the anchor's 31st comes back in March.
        (datetime(2032, 2, 1, tzinfo=UTC), datetime(2032, 2, 29, 12, tzinfo=UTC)),
        (datetime(2032, 2, 29, 12, tzinfo=UTC), datetime(2032, 3, 31, 12, tzinfo=UTC)),
    ],
)
def test_monthly_periods_years_after_the_anchor(after: datetime, end: datetime) -> None:
    assert next_period_end(A, "MONTH", 1, after) == end


def test_every_month_of_three_years_keeps_the_anchor_day() -> None:
    # Month ends of 2027, 2028 (leap) and 2029, by hand; the anchor's day 31 clamps to them.
    lengths = {
        2027: [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31],
        2028: [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31],
        2029: [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31],
    }
    expected = [
        datetime(year, month, days[month - 1], 12, tzinfo=UTC)
        for year, days in lengths.items()
        for month in range(1, 13)
    ][1:]  # from 2027-02-28, boundary 1
    ends, end = [], A
    for _ in expected:
        end = next_period_end(A, "MONTH", 1, end)
        ends.append(end)
    assert ends == expected


@pytest.mark.parametrize(
    ("count", "after", "end"),
    [
        # Fixed 1-day steps from 2027-01-31 12:00: 10 d 6 h later the next boundary is day 11,
        # 2027-01-31 + 11 d = 2027-02-11 12:00.
        (1, A + timedelta(days=10, hours=6), datetime(2027, 2, 11, 12, tzinfo=UTC)),
        # Exactly on day 10 (2027-02-10 12:00): strictly after it is day 11.
        (1, datetime(2027, 2, 10, 12, tzinfo=UTC), datetime(2027, 2, 11, 12, tzinfo=UTC)),
        # Every 3 days (3, 6, 9, 12, ...): after day 10.25 comes day 12 = 2027-02-12 12:00.
        (3, A + timedelta(days=10, hours=6), datetime(2027, 2, 12, 12, tzinfo=UTC)),
        # On day 9 exactly, the next is day 12.
        (3, A + timedelta(days=9), datetime(2027, 2, 12, 12, tzinfo=UTC)),
        # Day 400 exactly -> day 401: 2027-01-31 + 365 = 2028-01-31, + 36 = 2028-03-07
        # (Feb 2028 has 29 days: Feb 1 is +1, Feb 29 +29, Mar 1 +30, Mar 7 +36).
        (1, A + timedelta(days=400), datetime(2028, 3, 7, 12, tzinfo=UTC)),
    ],
)
def test_day_intervals_after_the_anchor(count: int, after: datetime, end: datetime) -> None:
    assert next_period_end(A, "DAY", count, after) == end


def test_week_and_year_intervals_after_the_anchor() -> None:
    # Weeks: 20 days after 2027-01-31 12:00 the next boundary is day 21 = 2027-02-21 12:00.
    assert next_period_end(A, "WEEK", 1, A + timedelta(days=20)) == datetime(
        2027, 2, 21, 12, tzinfo=UTC
    )
    # Years from a leap day keep Feb 29 where it exists and clamp to Feb 28 elsewhere.
    leap = datetime(2028, 2, 29, tzinfo=UTC)
    assert next_period_end(leap, "YEAR", 1, datetime(2036, 2, 28, tzinfo=UTC)) == datetime(
        2036, 2, 29, tzinfo=UTC
    )
    assert next_period_end(leap, "YEAR", 1, datetime(2036, 3, 1, tzinfo=UTC)) == datetime(
        2037, 2, 28, tzinfo=UTC
    )
    # Every 2 years: 2030-02-28, 2032-02-29, ...
    assert next_period_end(leap, "YEAR", 2, datetime(2031, 1, 1, tzinfo=UTC)) == datetime(
        2032, 2, 29, tzinfo=UTC
    )


@pytest.mark.parametrize("interval", ["DAY", "WEEK", "MONTH", "YEAR"])
@pytest.mark.parametrize("count", [0, -1])
def test_interval_count_below_one_is_refused(interval: str, count: int) -> None:
    with pytest.raises(ValueError, match="interval_count"):
        next_period_end(A, interval, count, A)


def test_a_period_ends_at_least_one_interval_after_its_anchor() -> None:
    # Even for a moment before the anchor, the first end is boundary 1, never the anchor.
    assert next_period_end(A, "MONTH", 1, A - timedelta(days=10)) == datetime(
        2027, 2, 28, 12, tzinfo=UTC
    )
    assert next_period_end(A, "DAY", 2, A) == datetime(2027, 2, 2, 12, tzinfo=UTC)


def test_shift_and_boundary() -> None:
    # Backwards: Jan 31 - 1 month = Dec 31 of the previous year; - 11 months = Feb 28 2026.
    assert shift(A, "MONTH", -1) == datetime(2026, 12, 31, 12, tzinfo=UTC)
    assert shift(A, "MONTH", -11) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert shift(A, "MONTH", 0) == A
    # Across the year end: Dec 15 + 1 month = Jan 15 of the next year; + 1 year keeps the day.
    dec = datetime(2027, 12, 15, tzinfo=UTC)
    assert shift(dec, "MONTH", 1) == datetime(2028, 1, 15, tzinfo=UTC)
    assert shift(dec, "YEAR", -2) == datetime(2025, 12, 15, tzinfo=UTC)
    assert shift(A, "WEEK", -1) == datetime(2027, 1, 24, 12, tzinfo=UTC)
    assert shift(A, "DAY", -31) == datetime(2026, 12, 31, 12, tzinfo=UTC)
    # boundary k = anchor + k x count intervals: 3 x 2 months from Jan 31 = Jul 31.
    assert boundary(A, "MONTH", 2, 3) == datetime(2027, 7, 31, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="no periods"):
        shift(A, "ONE_TIME", 1)


def test_periods_are_computed_in_utc() -> None:
    # 2027-02-01 03:00 at UTC+7 is 2027-01-31 20:00 UTC: the anchor day is the 31st in UTC,
    # so one month later is 2027-02-28 20:00 UTC (not Mar 1, the local next-month day).
    local = datetime(2027, 2, 1, 3, tzinfo=timezone(timedelta(hours=7)))
    end = next_period_end(local, "MONTH", 1, local)
    assert end == datetime(2027, 2, 28, 20, tzinfo=UTC)
    assert end.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("interval", "count", "after", "end"),
    [
        # 2027-01-31 -> 2037-01-31 is 10 x 365 + 3 (2028, 2032, 2036) = 3653 days, boundary 120
        ("MONTH", 1, datetime(2037, 1, 31, 11, tzinfo=UTC), datetime(2037, 1, 31, 12, tzinfo=UTC)),
        # ... and boundary 40 of a quarterly series (40 x 3 months)
        ("MONTH", 3, datetime(2037, 1, 31, 11, tzinfo=UTC), datetime(2037, 1, 31, 12, tzinfo=UTC)),
        # day 3653 exactly -> day 3654 = 2037-02-01 12:00
        ("DAY", 1, datetime(2037, 1, 31, 12, tzinfo=UTC), datetime(2037, 2, 1, 12, tzinfo=UTC)),
        # 3653 days = 521 weeks + 6 days: the next is week 522, day 522 x 7 = 3654
        ("WEEK", 1, datetime(2037, 1, 31, 12, tzinfo=UTC), datetime(2037, 2, 1, 12, tzinfo=UTC)),
        # exactly on year 10 -> year 11
        ("YEAR", 1, datetime(2037, 1, 31, 12, tzinfo=UTC), datetime(2038, 1, 31, 12, tzinfo=UTC)),
    ],
)
def test_far_boundaries_take_a_few_steps(
    monkeypatch: pytest.MonkeyPatch, interval: str, count: int, after: datetime, end: datetime
) -> None:
    # The index is estimated from the elapsed time, so ten years of periods are not walked
    # one boundary at a time (120 months, 3653 days): a handful of boundaries are computed.
    calls: list[int] = []

    def counting(anchor: datetime, interval: str, interval_count: int, k: int) -> datetime:
        calls.append(k)
        return boundary(anchor, interval, interval_count, k)

    monkeypatch.setattr(periods, "boundary", counting)
    assert periods.next_period_end(A, interval, count, after) == end
    assert len(calls) <= 20
