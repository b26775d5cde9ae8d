from decimal import Decimal

import pytest

from billing_gql.money import (
    InvalidAmount,
    InvalidCurrency,
    Money,
    exponent,
    format_decimal,
    format_minor,
    parse_decimal,
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


def test_money_subtraction_checks_currency() -> None:
    # 1.00 - 0.30 = 0.70 USD: 100 - 30 = 70 minor units
    assert Money(100, "USD") - Money(30, "usd") == Money(70, "USD")
    # 0.30 - 1.00 = -0.70: the difference keeps its sign (a credit), 30 - 100 = -70
    assert (Money(30, "USD") - Money(100, "USD")).minor == -70
    with pytest.raises(InvalidCurrency):
        Money(1, "USD") - Money(1, "EUR")


@pytest.mark.parametrize("currency", ["CLF", "UYW", "clf"])
def test_four_decimal_currencies(currency: str) -> None:
    # ISO 4217 gives CLF and UYW four minor digits: 1 major unit = 10^4 minor units.
    assert exponent(currency) == 4
    assert parse_major("1.2345", currency) == 12345  # 1.2345 x 10^4
    assert parse_major("2", currency) == 20000  # 2 x 10^4
    assert Money.parse("0.0001", currency).minor == 1  # the smallest unit, 10^-4
    with pytest.raises(InvalidAmount):
        parse_major("1.23456", currency)  # a fifth decimal is finer than the minor unit
    assert format_minor(12345, currency) == "1.2345"
    assert format_minor(5, currency) == "0.0005"
    assert format_minor(-20000, currency) == "-2.0000"
    # Rounding to 4 decimals, half-up away from zero:
    # 0.00005 x 10^4 = 0.5 -> 1; 0.000049 x 10^4 = 0.49 -> 0; -0.00015 x 10^4 = -1.5 -> -2
    assert round_line(Decimal("0.00005"), currency) == 1
    assert round_line(Decimal("0.000049"), currency) == 0
    assert round_line(Decimal("-0.00015"), currency) == -2


def test_zero_and_negative_amounts() -> None:
    # 0 is an amount, not a negative one; negatives only when asked for.
    assert parse_major("0", "USD") == 0
    assert Money.parse("0.00", "USD").minor == 0
    with pytest.raises(InvalidAmount):
        parse_decimal("-0.01")
    with pytest.raises(InvalidAmount):
        Money.parse("-0.01", "USD")
    assert parse_decimal("-0.01", allow_negative=True) == Decimal("-0.01")
    assert Money.parse("-0.01", "USD", allow_negative=True).minor == -1  # -0.01 x 10^2


def test_no_negative_zero_in_plain_decimals() -> None:
    assert format_decimal(Decimal("-0")) == "0"
    assert format_decimal(Decimal("-0.00")) == "0"
    assert format_decimal(Decimal("1.0")) == "1"


def test_money_prints_its_amount_and_currency() -> None:
    assert str(Money(2900, "usd")) == "29.00 USD"
    assert str(Money(-1, "KWD")) == "-0.001 KWD"  # 3 decimals
