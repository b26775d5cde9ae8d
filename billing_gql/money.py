"""Money: integer minor units plus an ISO 4217 currency.

This is the only module that converts between major-unit decimal strings and minor units,
and the only place rounding happens. It imports nothing of ours.

- Amounts are stored and computed as ``int`` minor units (cents for USD, dong for VND).
- Prices for usage may be finer than the minor unit; they are ``decimal.Decimal`` and each
  invoice line is rounded once, half-up (away from zero for negatives), by :func:`round_line`.
- No float ever holds money: parsing refuses floats outright.
- Bounds (:data:`MAX_AMOUNT_MINOR`, :data:`MAX_QUANTITY`): every amount that enters from
  outside (GraphQL money inputs, prices, provider-reported amounts) is at most 10^12 minor
  units and every quantity at most 10^6, so an amount times a quantity (10^18), plus a few
  such totals, stays below PostgreSQL's bigint (2^63 - 1 ≈ 9.2 x 10^18). Input past them is
  refused with ``AMOUNT_TOO_LARGE`` / ``QUANTITY_TOO_LARGE`` instead of overflowing later.
"""

from __future__ import annotations

import decimal
import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import ClassVar

from billing_gql.errors import ErrorCode

__all__ = [
    "CURRENCY_EXPONENTS",
    "MAX_AMOUNT_MINOR",
    "MAX_DECIMAL_PLACES",
    "MAX_QUANTITY",
    "MAX_TOTAL_MINOR",
    "AmountTooLarge",
    "InvalidAmount",
    "InvalidCurrency",
    "Money",
    "MoneyError",
    "ceil_div",
    "check_amount",
    "exponent",
    "format_decimal",
    "format_minor",
    "minor_to_decimal",
    "normalize_currency",
    "parse_decimal",
    "parse_major",
    "round_line",
]

# Active ISO 4217 codes and their minor-unit exponents (ISO 4217 list one, 2024 edition).
_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD "
    "FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD "
    "KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD "
    "NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP "
    "SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED "
    "VES WST XCD XCG YER ZAR ZMW ZWG"
)

CURRENCY_EXPONENTS: dict[str, int] = {
    **{code: 0 for code in _EXPONENT_0.split()},
    **{code: 2 for code in _EXPONENT_2.split()},
    **{code: 3 for code in _EXPONENT_3.split()},
    **{code: 4 for code in _EXPONENT_4.split()},
}

# Enough precision for any sane amount; the context is local so callers' contexts are untouched.
_CTX = decimal.Context(prec=60, rounding=ROUND_HALF_UP, traps=[InvalidOperation])


class MoneyError(ValueError):
    """Base of the money errors; ``code`` is the public userErrors code."""

    code: ClassVar[ErrorCode] = ErrorCode.INVALID_AMOUNT


class InvalidAmount(MoneyError):
    """Not a decimal string, a float, too many decimals for the currency, or negative."""

    code = ErrorCode.INVALID_AMOUNT


MAX_AMOUNT_MINOR = 10**12
"""The largest amount (minor units, either sign) accepted from outside: a price, a credit, a
payment a provider reports. 10^12 is 10 billion USD or 1 trillion VND."""
MAX_QUANTITY = 10**6
"""The largest quantity (seats, units) of a subscription or checkout."""
MAX_TOTAL_MINOR = MAX_AMOUNT_MINOR * MAX_QUANTITY
"""The largest amount x quantity (10^18): under bigint's 2^63 - 1 with room for a few more.
Also the bound of decimal inputs (usage quantities, tier bounds, limits)."""
MAX_DECIMAL_PLACES = 30
"""The most digits after the point a decimal input (a unit price, a limit) may have: keeps it
inside PostgreSQL's numeric scale and Decimal arithmetic exact."""


class AmountTooLarge(InvalidAmount):
    """An amount past :data:`MAX_AMOUNT_MINOR` (or a total past :data:`MAX_TOTAL_MINOR`)."""

    code = ErrorCode.AMOUNT_TOO_LARGE


def check_amount(minor: int, *, limit: int = MAX_AMOUNT_MINOR) -> int:
    """``minor`` unchanged when ``abs(minor) <= limit``, else :class:`AmountTooLarge`."""
    if abs(minor) > limit:
        raise AmountTooLarge(f"amounts are limited to {limit} minor units")
    return minor


class InvalidCurrency(MoneyError):
    """Not an active ISO 4217 code."""

    code = ErrorCode.INVALID_CURRENCY


def shown(value: object) -> str:
    """A value as a message quotes it: a string in double quotes (JSON escapes), a Decimal as
    its plain digits, never a Python repr such as ``Decimal('29.999')``."""
    if isinstance(value, Decimal):
        return f'"{format(value, "f")}"' if value.is_finite() else f'"{value}"'
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return f'"{value}"'


def normalize_currency(code: object) -> str:
    """Return the upper-case ISO 4217 code, or raise :class:`InvalidCurrency`."""
    if not isinstance(code, str):
        raise InvalidCurrency("currency must be an ISO 4217 code string")
    upper = code.strip().upper()
    if upper not in CURRENCY_EXPONENTS:
        raise InvalidCurrency(f"unknown currency {shown(code)}")
    return upper


def exponent(currency: str) -> int:
    """The number of minor digits of ``currency`` (USD 2, VND 0, KWD 3)."""
    return CURRENCY_EXPONENTS[normalize_currency(currency)]


def parse_decimal(value: object, *, allow_negative: bool = False) -> Decimal:
    """Parse a decimal *string* (never a float or a JSON number) into a finite Decimal."""
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or text.lower().startswith(("nan", "inf", "+inf", "-inf", "snan")):
            raise InvalidAmount(f"{shown(value)} is not a decimal number")
        try:
            number = _CTX.create_decimal(text)
        except (InvalidOperation, ValueError):
            raise InvalidAmount(f"{shown(value)} is not a decimal number") from None
    else:
        raise InvalidAmount("amounts must be decimal strings")
    if not number.is_finite():
        raise InvalidAmount(f"{shown(value)} is not a finite number")
    if number < 0 and not allow_negative:
        raise InvalidAmount(f"{shown(value)} is negative")
    return number


def parse_major(value: object, currency: str, *, allow_negative: bool = False) -> int:
    """Parse a major-unit decimal string into integer minor units of ``currency``.

    ``"29.000"`` is valid for USD (the value is checked, not the digits); ``"29.001"`` is not.
    """
    exp = exponent(currency)
    number = parse_decimal(value, allow_negative=allow_negative)
    scaled = number.scaleb(exp, _CTX)
    if scaled != scaled.to_integral_value(context=_CTX):
        raise InvalidAmount(
            f"{shown(value)} has more precision than {normalize_currency(currency)} allows"
        )
    if abs(scaled) > MAX_AMOUNT_MINOR:
        raise AmountTooLarge(
            f"{shown(value)} is more than {format_minor(MAX_AMOUNT_MINOR, currency)} "
            f"{normalize_currency(currency)}, the largest amount accepted"
        )
    return int(scaled)


def minor_to_decimal(minor: int, currency: str) -> Decimal:
    """Minor units as a Decimal in major units with exactly the currency's digits."""
    exp = exponent(currency)
    return Decimal(minor).scaleb(-exp, _CTX).quantize(Decimal(1).scaleb(-exp), context=_CTX)


def format_minor(minor: int, currency: str) -> str:
    """``2900, "USD"`` → ``"29.00"``; ``199000, "VND"`` → ``"199000"``; ``-500`` → ``"-5.00"``."""
    return format(minor_to_decimal(minor, currency), "f")


def format_decimal(value: Decimal) -> str:
    """A plain decimal string with no exponent and no trailing zeros (``"1000"``, ``"0.0015"``)."""
    if value == 0:
        return "0"
    normalized = value.normalize(_CTX)
    text = format(normalized, "f")
    return text


def round_line(amount_major: Decimal, currency: str) -> int:
    """Round a major-unit amount once, half-up (away from zero), to minor units."""
    exp = exponent(currency)
    return int(amount_major.scaleb(exp, _CTX).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def ceil_div(numerator: Decimal, denominator: Decimal) -> Decimal:
    """``ceil(numerator / denominator)`` computed exactly in Decimal."""
    return (numerator / denominator).to_integral_value(rounding=ROUND_CEILING, context=_CTX)


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in integer minor units of an ISO 4217 currency."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise InvalidAmount("Money.minor must be an int of minor units")
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @classmethod
    def parse(cls, amount: object, currency: object, *, allow_negative: bool = False) -> Money:
        """Parse user input: a decimal string in major units and a currency code."""
        code = normalize_currency(currency)
        return cls(parse_major(amount, code, allow_negative=allow_negative), code)

    @property
    def amount(self) -> str:
        """Major units with exactly the currency's minor digits (``"29.00"``)."""
        return format_minor(self.minor, self.currency)

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise InvalidCurrency(f"cannot combine {self.currency} with {other.currency}")

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
