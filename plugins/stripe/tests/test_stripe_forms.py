"""Stripe's form encoding: bracket notation, indexed arrays, None left out."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import unquote

import pytest

from billing_gql_stripe.forms import decode, encode, flatten


def test_the_documented_example_encodes_exactly() -> None:
    params = {
        "mode": "subscription",
        "line_items": [{"price": "price_1", "quantity": 1}],
        "success_url": "https://x/ok",
        "cancel_url": "https://x/no",
        "client_reference_id": "usr_42",
        "metadata": {"user_id": "usr_42"},
        "subscription_data": {"trial_period_days": 14},
    }
    assert unquote(encode(params)) == (
        "mode=subscription&line_items[0][price]=price_1&line_items[0][quantity]=1"
        "&success_url=https://x/ok&cancel_url=https://x/no&client_reference_id=usr_42"
        "&metadata[user_id]=usr_42&subscription_data[trial_period_days]=14"
    )
    # The URLs are percent-encoded on the wire, as stripe-python sends them.
    assert "success_url=https%3A%2F%2Fx%2Fok" in encode(params)


def test_none_is_omitted_and_scalars_are_stripe_text() -> None:
    pairs = flatten(
        {
            "a": None,
            "b": True,
            "c": False,
            "d": Decimal("12.500"),
            "e": Decimal("1E+3"),
            "f": datetime(2026, 1, 1, tzinfo=UTC),
            "g": {"x": None, "y": [None, "k"]},
            "h": [],
        }
    )
    assert pairs == [
        ("b", "true"),
        ("c", "false"),
        ("d", "12.5"),
        ("e", "1000"),
        ("f", "1767225600"),
        ("g[y][1]", "k"),
    ]


def test_nested_lists_of_objects_are_indexed() -> None:
    pairs = flatten({"items": [{"id": "si_1", "price": "p2"}, {"id": "si_2", "deleted": True}]})
    assert pairs == [
        ("items[0][id]", "si_1"),
        ("items[0][price]", "p2"),
        ("items[1][id]", "si_2"),
        ("items[1][deleted]", "true"),
    ]


def test_decode_inverts_encode() -> None:
    params = {
        "mode": "payment",
        "line_items": [
            {"price": "price_1", "quantity": "2"},
            {"price": "price_2", "quantity": "1"},
        ],
        "metadata": {"a b": "c&d=e", "empty": ""},
        "pause_collection": "",
    }
    assert decode(encode(params)) == params


def test_decode_appends_for_empty_brackets_and_rejects_garbage() -> None:
    assert decode("expand[]=a&expand[]=b") == {"expand": ["a", "b"]}
    assert decode(b"x[1]=a&x[0]=b") == {"x": ["b", "a"]}
    assert decode("x[0]=a&x[2]=b") == {"x": {"0": "a", "2": "b"}}
    with pytest.raises(ValueError):
        decode("a]b=1")
    with pytest.raises(ValueError):
        decode("a=1&a[b]=2")
