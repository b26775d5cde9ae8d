from decimal import Decimal

import pytest

from billing_gql.money import (
    InvalidAmount,
    InvalidCurrency,
    Money,
    exponent,
    format_decimal,
    format_minor,
    parse_major,
    round_line,
)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("29.00", "USD", 2900),
        ("29", "USD", 2900),
        ("29.000", "USD", 2900),
        ("0.01", "usd", 1),
        ("199000", "VND", 199000),
        ("1.500", "KWD", 1500),
        ("1000", "JPY", 1000),
    ],
)
def test_parse_major(amount: str, currency: str, minor: int) -> None:
    assert parse_major(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("29.001", "USD"),
        ("1.5", "VND"),
        ("0.5", "JPY"),
        ("1.0001", "KWD"),
        ("-1", "USD"),
        ("abc", "USD"),
        ("NaN", "USD"),
        ("Infinity", "USD"),
        ("", "USD"),
    ],
)
def test_parse_major_rejects(amount: str, currency: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_major(amount, currency)


def test_floats_are_never_money() -> None:
    with pytest.raises(InvalidAmount):
        parse_major(29.0, "USD")
    with pytest.raises(InvalidAmount):
        Money(29.0, "USD")  # type: ignore[arg-type]


def test_unknown_currency() -> None:
    with pytest.raises(InvalidCurrency):
        parse_major("1", "XXX1")
    with pytest.raises(InvalidCurrency):
        exponent("ABC")


def test_format_minor() -> None:
    assert format_minor(2900, "USD") == "29.00"
    assert format_minor(-500, "USD") == "-5.00"
    assert format_minor(199000, "VND") == "199000"
    assert format_minor(1500, "KWD") == "1.500"
    assert format_minor(5, "USD") == "0.05"


def test_format_decimal_is_plain() -> None:
    assert format_decimal(Decimal("1E+3")) == "1000"
    assert format_decimal(Decimal("0.00150")) == "0.0015"
    assert format_decimal(Decimal("0.000")) == "0"
    assert format_decimal(Decimal("-2.50")) == "-2.5"


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        ("0.005", "USD", 1),
        ("0.0049", "USD", 0),
        ("-0.005", "USD", -1),
        ("2.5", "VND", 3),
        ("-2.5", "JPY", -3),
        ("0.0005", "KWD", 1),
    ],
)
def test_round_line_half_up_away_from_zero(value: str, currency: str, minor: int) -> None:
    assert round_line(Decimal(value), currency) == minor


def test_money_arithmetic_checks_currency() -> None:
    assert (Money(100, "USD") + Money(5, "usd")).minor == 105
    assert Money(100, "USD").amount == "1.00"
    with pytest.raises(InvalidCurrency):
        Money(1, "USD") + Money(1, "EUR")
