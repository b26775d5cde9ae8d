"""Custom scalars: ``Decimal`` (strings only), ``DateTime`` (UTC out, offset required in)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import strawberry
from graphql import StringValueNode, ValueNode

from billing_gql.money import InvalidAmount, format_decimal, parse_decimal, shown


def _serialize_decimal(value: Any) -> str:
    # A str is already formatted (Money.amount keeps the currency's minor digits).
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"Decimal cannot represent {type(value).__name__}")


def _parse_decimal(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ValueError('Decimal values are strings, e.g. "29.00" (JSON numbers are rejected)')
    try:
        return parse_decimal(value, allow_negative=True)
    except InvalidAmount as exc:
        raise ValueError(str(exc)) from None


def _parse_decimal_literal(node: ValueNode, variables: Any = None) -> Decimal:
    if not isinstance(node, StringValueNode):
        raise ValueError('Decimal literals are strings, e.g. "29.00"')
    return _parse_decimal(node.value)


def serialize_datetime(value: Any) -> str:
    """UTC ISO-8601 with a ``Z``."""
    if not isinstance(value, datetime):
        raise ValueError(f"DateTime cannot represent {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text: str = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("DateTime values are ISO-8601 strings")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{shown(value)} is not an ISO-8601 date-time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{shown(value)} has no UTC offset; add Z or +HH:MM")
    return parsed.astimezone(UTC)


def _parse_datetime_literal(node: ValueNode, variables: Any = None) -> datetime:
    if not isinstance(node, StringValueNode):
        raise ValueError("DateTime literals are strings")
    return parse_datetime(node.value)


DecimalScalar = strawberry.scalar(
    name="Decimal",
    description='An exact decimal number as a string: "29.00", "0.0015". Never a JSON number.',
    serialize=_serialize_decimal,
    parse_value=_parse_decimal,
    parse_literal=_parse_decimal_literal,
)

DateTimeScalar = strawberry.scalar(
    name="DateTime",
    description="An ISO-8601 date-time. Output is UTC; input must carry an offset.",
    serialize=serialize_datetime,
    parse_value=parse_datetime,
    parse_literal=_parse_datetime_literal,
)

SCALAR_OVERRIDES: dict[object, Any] = {Decimal: DecimalScalar, datetime: DateTimeScalar}
