"""Collecting input problems so a request reports all of them at once, then writes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from urllib.parse import urlsplit

from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.money import (
    MAX_AMOUNT_MINOR,
    MAX_DECIMAL_PLACES,
    MAX_TOTAL_MINOR,
    MoneyError,
    exponent,
    normalize_currency,
    parse_decimal,
    parse_major,
)
from billing_gql.settings import OutboundSettings, url_origin

CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}$")
MAX_REDIRECT_URL = 2000


def unstorable(text: str) -> str | None:
    """Why PostgreSQL cannot store ``text`` (``None``: it can): its text types refuse the NUL
    character, and UTF-8 has no encoding for an unpaired surrogate (JSON may carry both)."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (an unpaired surrogate)"
    return None


class Problems:
    """Accumulates :class:`UserInputError` entries with their field paths."""

    def __init__(self) -> None:
        self.errors: list[UserInputError] = []

    def add(self, code: str, message: str, *path: str | int) -> None:
        self.errors.append(UserInputError(code, message, [str(p) for p in path] or None))

    @contextmanager
    def at(self, *path: str | int) -> Iterator[None]:
        """Record a :class:`UserInputError` or money error raised inside as one at ``path``."""
        try:
            yield
        except UserInputError as exc:
            self.errors.append(
                UserInputError(exc.code, exc.message, [str(p) for p in path] + (exc.field or []))
            )
        except MoneyError as exc:
            self.add(exc.code, str(exc), *path)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise UserInputErrors(self.errors)

    def code(self, value: str, what: str, *path: str | int) -> str:
        """A catalog code: 1–100 letters, digits, ``_ . : -``, starting alphanumeric."""
        if not CODE_RE.match(value or ""):
            self.add("INVALID_INPUT", f"{what} must be 1–100 letters, digits or _.:- ", *path)
        return value

    def text(self, value: str | None, what: str, *path: str | int, max_len: int = 500) -> str:
        text = (value or "").strip()
        if not text:
            self.add("INVALID_INPUT", f"{what} must not be empty", *path)
        elif len(text) > max_len:
            self.add("INVALID_INPUT", f"{what} is longer than {max_len} characters", *path)
        return text

    def redirect_url(
        self, value: str | None, name: str, outbound: OutboundSettings, *, admin: bool
    ) -> str | None:
        """A URL the provider sends the customer's browser to (``successUrl``, ``cancelUrl``,
        ``returnUrl``): every URL-taking input passes here.

        Only the operator's ``BILLING_GQL_REDIRECT_ORIGINS`` are allowed (exact scheme, host and
        port); with none configured an admin key may send any https URL and a customer token
        none (REDIRECT_NOT_ALLOWED). A malformed URL is INVALID_INPUT.
        """
        if value is None:
            return None
        text = value.strip()
        origin = url_origin(text)
        if (
            origin is None
            or len(text) > MAX_REDIRECT_URL
            or any(c.isspace() or c == "\\" or ord(c) < 32 or ord(c) == 127 for c in text)
            or "@" in urlsplit(text).netloc
        ):
            self.add(
                "INVALID_INPUT",
                f"{name} must be an http(s) URL of at most {MAX_REDIRECT_URL} characters, "
                "without credentials",
                name,
            )
        elif outbound.redirect_origins:
            if origin not in outbound.redirect_origins:
                self.add(
                    "REDIRECT_NOT_ALLOWED",
                    f"{name} must point to one of the origins in BILLING_GQL_REDIRECT_ORIGINS",
                    name,
                )
        elif not admin or not text.lower().startswith("https://"):
            self.add(
                "REDIRECT_NOT_ALLOWED",
                f"{name} is refused: no redirect origins are configured "
                "(BILLING_GQL_REDIRECT_ORIGINS), so only an admin key may send one, over https",
                name,
            )
        return text

    def currency(self, value: str, *path: str | int) -> str:
        try:
            return normalize_currency(value)
        except MoneyError as exc:
            self.add(exc.code, str(exc), *path)
            return value

    def amount(self, value: object, currency: str, *path: str | int) -> int:
        """Major-unit amount → minor units of ``currency``; no negatives. An unknown
        ``currency`` is its own field's error (:meth:`currency`): not reported here again."""
        try:
            normalize_currency(currency)
        except MoneyError:
            return 0
        try:
            return parse_major(value, currency)
        except MoneyError as exc:
            self.add(exc.code, str(exc), *path)
            return 0

    def decimal(
        self,
        value: object,
        what: str,
        *path: str | int,
        allow_negative: bool = False,
        code: str = "INVALID_INPUT",
        too_large: str = "QUANTITY_TOO_LARGE",
    ) -> Decimal:
        """A decimal string; ``code`` is what a bad one reports (prices: ``INVALID_AMOUNT``),
        ``too_large`` what one past ``MAX_TOTAL_MINOR`` reports; at most
        ``MAX_DECIMAL_PLACES`` digits after the point."""
        try:
            number = parse_decimal(value, allow_negative=allow_negative)
        except MoneyError:
            sign = "" if allow_negative else " non-negative"
            self.add(code, f"{what} must be a{sign} decimal string", *path)
            return Decimal(0)
        # Both bounds keep PostgreSQL's numeric columns (and Decimal arithmetic) in range.
        if abs(number) > MAX_TOTAL_MINOR:
            self.add(too_large, f"{what} is more than {MAX_TOTAL_MINOR}", *path)
            return Decimal(0)
        exp = number.normalize().as_tuple().exponent
        if isinstance(exp, int) and exp < -MAX_DECIMAL_PLACES:
            self.add(code, f"{what} has more than {MAX_DECIMAL_PLACES} decimal places", *path)
            return Decimal(0)
        return number

    def price(
        self, value: object, what: str, *path: str | int, currency: str | None = None
    ) -> Decimal:
        """A unit or flat price finer than the minor unit: non-negative, else INVALID_AMOUNT;
        over :data:`~billing_gql.money.MAX_AMOUNT_MINOR` minor units of ``currency`` (when
        known), AMOUNT_TOO_LARGE."""
        number = self.decimal(
            value, what, *path, code="INVALID_AMOUNT", too_large="AMOUNT_TOO_LARGE"
        )
        try:
            minor = number.scaleb(exponent(currency)) if currency else number
        except MoneyError:
            minor = number  # the currency's own problem is reported where it is read
        if abs(minor) > MAX_AMOUNT_MINOR:
            self.add(
                "AMOUNT_TOO_LARGE", f"{what} is more than {MAX_AMOUNT_MINOR} minor units", *path
            )
            return Decimal(0)
        return number


class Omitted:
    """The value of an input field the caller did not send (distinct from an explicit null)."""

    _instance: Omitted | None = None

    def __new__(cls) -> Omitted:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "OMITTED"

    def __bool__(self) -> bool:
        return False


OMITTED = Omitted()
