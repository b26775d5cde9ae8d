"""Stripe's form encoding: nested parameters in bracket notation, arrays always indexed.

``{"line_items": [{"price": "p", "quantity": 1}], "metadata": {"k": "v"}, "x": None}`` becomes
``line_items[0][price]=p&line_items[0][quantity]=1&metadata[k]=v`` (``None`` is omitted, as
stripe-python does; booleans are ``true``/``false``; datetimes are Unix seconds).
:func:`decode` is the inverse, used by the fake Stripe to read what the plugin sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = ["decode", "encode", "flatten", "scalar"]


def scalar(value: object) -> str:
    """One form value: ``true``/``false``, Unix seconds, a plain decimal, or the text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return str(int(value.timestamp()))
    if isinstance(value, Decimal):
        # Plain notation: Stripe rejects exponents such as 1E+3.
        text = format(value, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, int | str):
        return str(value)
    raise TypeError(f"cannot form-encode {type(value).__name__}")


def flatten(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``params`` as ordered (key, value) pairs in bracket notation, ``None`` left out."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        _flatten_value(name, value, pairs)
    return pairs


def _flatten_value(name: str, value: Any, pairs: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        pairs.extend(flatten(value, name))
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for index, item in enumerate(value):
            _flatten_value(f"{name}[{index}]", item, pairs)
    else:
        pairs.append((name, scalar(value)))


def encode(params: Mapping[str, Any]) -> str:
    """``params`` as an ``application/x-www-form-urlencoded`` body."""
    return urlencode(flatten(params))


_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def decode(body: str | bytes) -> dict[str, Any]:
    """A form body (or query string) back into nested dicts and lists.

    A dict whose keys are all ``0..n-1`` becomes a list; ``key[]`` appends. A malformed key
    raises ``ValueError``.
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True, strict_parsing=False):
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"malformed parameter name {key!r}")
        parts = [match.group(1), *_PART.findall(match.group(2))]
        node: dict[str, Any] = root
        for index, raw_part in enumerate(parts):
            last = index == len(parts) - 1
            part = raw_part or str(sum(1 for k in node if k.isdigit()))  # key[] appends
            if last:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ValueError(f"parameter {key!r} conflicts with a scalar")
                node = child
    return {k: _listify(v) for k, v in root.items()}


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    keys = list(converted)
    if keys and all(k.isdigit() for k in keys) and sorted(map(int, keys)) == list(range(len(keys))):
        return [converted[str(i)] for i in range(len(keys))]
    return converted
