"""Hypothesis strategies for the custom GraphQL scalars (``billing_gql/graphql/scalars.py``) and
for the pieces of input that reach money, currency and id parsing, as GraphQL value nodes for
schemathesis (``schemathesis.graphql.scalar``).

Each mixes values the parser should accept (so generation reaches the services behind it) with
the edges where parsers break: exponents, NaN and infinities, huge magnitudes, many digits,
unicode digits, control characters and plain junk.
"""

from __future__ import annotations

import os
import string
from typing import Any

import graphql
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.graphql import nodes

EDGE_DECIMALS = [
    "0",
    "-0",
    "0.00",
    "29.00",
    "29.999",
    "-5.00",
    "1e3",
    "1E-3",
    "1e999999",
    "-1e-999999",
    "NaN",
    "-nan",
    "sNaN",
    "Infinity",
    "-inf",
    "+inf",
    "1_000",
    " 12 ",
    "",
    "99999999999999999999999999999999999999",
    "0." + "0" * 60 + "1",
    "١٢٣",
    "1.2.3",
    "\x00",
    "1000000000000",
    "10000000000.01",
    "0.000000000001",
    "123456789012345678.5",
]
EDGE_DATETIMES = [
    "2030-01-01T00:00:00Z",
    "2030-01-01T00:00:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59+14:00",
    "9999-12-31T23:59:59-14:00",
    "1970-01-01T00:00:00-00:01",
    "2030-02-30T00:00:00Z",
    "2030-01-01",
    "now",
    "",
    "2030-01-01T00:00:00.999999999Z",
    "+002030-01-01T00:00:00Z",
]
# The fuzzers' bounds: a fixed number of examples per operation (and per webhook route),
# derandomized, no deadline. BILLING_GQL_FUZZ_EXAMPLES raises it for a longer local run.
# A failure is reported as generated, not shrunk (shrinking can take minutes):
# BILLING_GQL_FUZZ_SHRINK=1 shrinks it when reproducing one.
EXAMPLES = int(os.environ.get("BILLING_GQL_FUZZ_EXAMPLES", "25"))
SHRINK = os.environ.get("BILLING_GQL_FUZZ_SHRINK", "") == "1"

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if SHRINK else [])],
    suppress_health_check=list(HealthCheck),
)
# The scoped API key's pass: a third of the examples (what it adds over the admin pass is the
# scope check in front of each operation, which does not depend on the arguments).
FUZZ_SCOPED = settings(FUZZ, max_examples=max(5, EXAMPLES // 3))

SEEDED = ["pro", "api_calls", "usr_1", "manual", "seats"]

CURRENCIES = ["USD", "usd", "VND", "JPY", "KWD", "EUR", "XXX", "ZZZ", "", "US", "USDD", "ＵＳＤ"]


def _decimal_text() -> st.SearchStrategy[str]:
    finite = st.decimals(allow_nan=False, allow_infinity=False, places=None).map(
        lambda d: format(d, "f")
    )
    scientific = st.decimals(allow_nan=False, allow_infinity=False).map(str)
    return st.one_of(
        st.sampled_from(EDGE_DECIMALS),
        finite,
        scientific,
        st.integers(min_value=-(10**40), max_value=10**40).map(str),
        st.text(alphabet=string.digits + ".-+eE_ ", max_size=30),
        st.text(max_size=20),
    )


def _datetime_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(EDGE_DATETIMES),
        st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
        st.datetimes().map(lambda d: d.isoformat() + "Z"),
        st.text(max_size=30),
    )


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value (deep and wide enough to reach size and nesting limits a little)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=40),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
        ),
        max_leaves=25,
    )


def value_node(value: Any) -> graphql.ValueNode:
    """A JSON value as a GraphQL literal."""
    if value is None:
        return nodes.Null
    if isinstance(value, bool):
        return nodes.Boolean(value)
    if isinstance(value, int):
        return nodes.Int(value)
    if isinstance(value, float):
        return nodes.Float(value)
    if isinstance(value, str):
        return nodes.String(value)
    if isinstance(value, list):
        return nodes.List([value_node(v) for v in value])
    fields = [
        graphql.ObjectFieldNode(name=graphql.NameNode(value=_name(k, i)), value=value_node(v))
        for i, (k, v) in enumerate(value.items())
    ]
    return nodes.Object(fields)


def _name(key: str, index: int) -> str:
    """A GraphQL name for an object key (literal object keys must be names)."""
    cleaned = "".join(c for c in key if c.isascii() and (c.isalnum() or c == "_"))
    if not cleaned or cleaned[0].isdigit():
        cleaned = f"k{index}{cleaned}"
    return cleaned


def wrong_kind() -> st.SearchStrategy[graphql.ValueNode]:
    """Literals of the wrong kind for a string scalar (a number, a list, an object, null)."""
    return st.one_of(
        st.integers(min_value=-(10**30), max_value=10**30).map(nodes.Int),
        st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
        st.booleans().map(nodes.Boolean),
        st.just(nodes.List([nodes.String("1")])),
    )


def register_scalars() -> None:
    """Register the strategies of billing-gql's scalars with schemathesis."""
    schemathesis.graphql.scalar(
        "Decimal", st.one_of(*[_decimal_text().map(nodes.String)] * 4, wrong_kind())
    )
    schemathesis.graphql.scalar(
        "DateTime", st.one_of(*[_datetime_text().map(nodes.String)] * 4, wrong_kind())
    )
    schemathesis.graphql.scalar("JSON", json_values().map(value_node))
    # Strings: mostly the values that mean something here (currencies, amounts, the seeded
    # plan and meter codes, country codes, URLs), else any text.
    schemathesis.graphql.scalar(
        "String",
        st.one_of(
            currency_text(),
            _decimal_text(),
            st.sampled_from([*SEEDED, "US", "VN", "https://example.com/ok", "http://127.0.0.1/"]),
            st.text(max_size=60),
        ).map(nodes.String),
    )
    schemathesis.graphql.scalar(
        "ID",
        st.one_of(
            st.uuids().map(str),
            st.sampled_from(["", "not-a-uuid", "00000000-0000-0000-0000-000000000000"]),
            st.text(max_size=40),
        ).map(nodes.String),
    )


def currency_text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(CURRENCIES), st.text(max_size=5))


def decimal_text() -> st.SearchStrategy[str]:
    return _decimal_text()


__all__ = ["currency_text", "decimal_text", "json_values", "register_scalars"]
