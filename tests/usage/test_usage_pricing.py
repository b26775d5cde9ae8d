"""Usage charge arithmetic (docs/api.md#charges) against hand-computed amounts."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from billing_gql.core.catalog import Charge, Tier
from billing_gql.usage.pricing import billable_quantity, charge_amount, charge_amount_major

D = Decimal


def charge(
    model: str,
    currency: str = "USD",
    *,
    unit: str | None = None,
    tiers: list[tuple[str | None, str, str]] | None = None,
    package: int | None = None,
    included: str = "0",
) -> Charge:
    return Charge(
        meter_id=uuid.uuid4(),
        meter_code="m",
        model=model,
        currency=currency,
        unit_amount=D(unit) if unit is not None else None,
        tiers=tuple(Tier(D(u) if u is not None else None, D(a), D(f)) for u, a, f in tiers)
        if tiers is not None
        else None,
        package_size=package,
        included_quantity=D(included),
    )


TIERS = [("10", "1", "0"), ("20", "0.5", "2"), (None, "0.1", "5")]


@pytest.mark.parametrize(
    ("quantity", "minor"),
    [
        ("0", 0),
        ("1", 100),  # 1 x 1.00
        ("10", 1000),  # the whole first tier; upTo is inclusive, so tier 2 is untouched
        ("10.5", 1225),  # 10 + 0.5 x 0.5 + 2 (tier 2's flat: a unit fell in it)
        ("11", 1250),  # 10 + 1 x 0.5 + 2
        ("20", 1700),  # 10 + 10 x 0.5 + 2
        ("21", 2210),  # 17 + 1 x 0.1 + 5
        ("120", 3200),  # 17 + 100 x 0.1 + 5
    ],
)
def test_graduated(quantity: str, minor: int) -> None:
    assert charge_amount(charge("GRADUATED", tiers=TIERS), D(quantity)) == minor


@pytest.mark.parametrize(
    ("quantity", "minor"),
    [
        ("0", 0),  # q = 0 costs 0, no flat amount either
        ("1", 100),  # 1 x 1.00
        ("10", 1000),  # 10 is held by the first tier (inclusive)
        ("10.5", 725),  # all 10.5 at 0.5, plus 2
        ("11", 750),  # 11 x 0.5 + 2
        ("20", 1200),  # 20 x 0.5 + 2
        ("21", 710),  # 21 x 0.1 + 5
    ],
)
def test_volume(quantity: str, minor: int) -> None:
    assert charge_amount(charge("VOLUME", tiers=TIERS), D(quantity)) == minor


# A stored plan whose last tier is not open-ended (validation now requires one).
CLOSED_TIERS = [("10", "1", "0"), ("20", "0.5", "2"), ("50", "0.25", "4")]


@pytest.mark.parametrize(
    ("quantity", "minor"),
    [
        ("20", 1200),  # the middle tier holds 20 (inclusive): 20 x 0.5 + 2 = 12.00
        ("50", 1650),  # the last tier holds 50: 50 x 0.25 + 4 = 16.50
        ("60", 1900),  # beyond the last tier, priced at it: 60 x 0.25 + 4 = 19.00
        ("50.5", 1663),  # 50.5 x 0.25 + 4 = 16.625 -> 16.63 (half-up)
        ("1000", 25400),  # 1000 x 0.25 + 4 = 254.00
    ],
)
def test_volume_beyond_the_last_tier_prices_at_the_last_tier(quantity: str, minor: int) -> None:
    assert charge_amount(charge("VOLUME", tiers=CLOSED_TIERS), D(quantity)) == minor


def test_graduated_tier_without_units_adds_no_flat_amount() -> None:
    # A degenerate stored tier (upTo equal to the previous one) holds no unit: its flat 7 is
    # not charged. 15 units: 10 x 1 + 0 (tier 2, empty) + 5 x 0.5 + 1 = 13.50
    tiers = [("10", "1", "0"), ("10", "9", "7"), (None, "0.5", "1")]
    assert charge_amount(charge("GRADUATED", tiers=tiers), D(15)) == 1350


@pytest.mark.parametrize("model", ["VOLUME", "GRADUATED"])
def test_zero_quantity_costs_nothing_even_with_a_first_tier_flat_amount(model: str) -> None:
    tiers = [("10", "1", "3"), (None, "0.5", "0")]
    c = charge(model, tiers=tiers)
    # q = 0 costs 0: no unit falls in the first tier, so its flat 3.00 is not charged.
    assert charge_amount_major(c, D(0)) == D(0)
    assert charge_amount(c, D(0)) == 0
    # One unit does fall in it: 1 x 1 + 3 = 4.00 under both models.
    assert charge_amount(c, D(1)) == 400


@pytest.mark.parametrize(
    ("quantity", "minor"),
    [("0", 0), ("1", 500), ("100", 500), ("101", 1000), ("250.5", 1500), ("300", 1500)],
)
def test_package(quantity: str, minor: int) -> None:
    assert charge_amount(charge("PACKAGE", unit="5", package=100), D(quantity)) == minor


@pytest.mark.parametrize(
    ("unit", "quantity", "minor"),
    [
        ("0.0015", "1", 0),  # 0.0015 -> 0.00
        ("0.0015", "1333", 200),  # 1.9995 -> 2.00 (half-up)
        ("0.0015", "3334", 500),  # 5.001 -> 5.00
        ("0.005", "1", 1),  # 0.005 -> 0.01: half-up, not half-even
        ("0.025", "1", 3),  # 0.025 -> 0.03 (half-even would give 0.02)
        ("0.0049", "1", 0),
        ("2", "2.5", 500),
    ],
)
def test_per_unit_with_finer_prices_rounds_once_half_up(
    unit: str, quantity: str, minor: int
) -> None:
    assert charge_amount(charge("PER_UNIT", unit=unit), D(quantity)) == minor


def test_rounding_happens_once_per_line_not_per_tier() -> None:
    # Each tier alone would round 0.004 -> 0.00, but the line is 0.008 -> 0.01.
    tiers = [("1", "0.004", "0"), (None, "0.004", "0")]
    assert charge_amount_major(charge("GRADUATED", tiers=tiers), D(2)) == D("0.008")
    assert charge_amount(charge("GRADUATED", tiers=tiers), D(2)) == 1


@pytest.mark.parametrize(
    ("currency", "unit", "quantity", "minor"),
    [
        ("VND", "1.5", "1", 2),  # 1.5 -> 2 dong (half-up)
        ("VND", "1.5", "3", 5),  # 4.5 -> 5
        ("VND", "0.4", "1", 0),
        ("JPY", "0.4", "5", 2),  # 2.0 -> 2 yen
        ("JPY", "0.45", "3", 1),  # 1.35 -> 1
        ("JPY", "12.5", "1", 13),
        ("KWD", "0.0005", "1", 1),  # 0.0005 -> 0.001 KWD (3 decimals)
        ("KWD", "0.0005", "3", 2),  # 0.0015 -> 0.002
        ("KWD", "0.0004", "1", 0),
        ("KWD", "1.2345", "2", 2469),  # 2.469
    ],
)
def test_zero_and_three_decimal_currencies(
    currency: str, unit: str, quantity: str, minor: int
) -> None:
    assert charge_amount(charge("PER_UNIT", currency, unit=unit), D(quantity)) == minor


def test_included_quantity_is_subtracted_and_floored_at_zero() -> None:
    c = charge("GRADUATED", tiers=TIERS, included="1000")
    assert billable_quantity(D(1021), c) == D(21)
    assert charge_amount(c, billable_quantity(D(1021), c)) == 2210
    assert billable_quantity(D(800), c) == D(0)
    assert charge_amount(c, billable_quantity(D(800), c)) == 0
    assert billable_quantity(D("1000.5"), c) == D("0.5")
