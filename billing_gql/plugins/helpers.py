"""Small pieces every provider plugin needs: our ids in the provider's metadata, its integer
amounts as :class:`~billing_gql.Money`.

Our ids travel to the provider in an object's ``metadata`` (:func:`our_metadata`) and come
back in its webhooks (:func:`metadata_of`, :func:`our_ids`), so every delivery finds its
checkout, customer and subscription.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from billing_gql.money import Money
from billing_gql.plugins.types import (
    METADATA_CHECKOUT_ID,
    METADATA_CUSTOMER_ID,
    METADATA_SUBSCRIPTION_ID,
    CheckoutRequest,
)

__all__ = ["OurIds", "metadata_of", "money_from_minor", "our_ids", "our_metadata"]


class OurIds(NamedTuple):
    """billing-gql's ids found in a provider object's metadata (``None`` where absent)."""

    checkout_id: str | None
    customer_id: str | None
    subscription_id: str | None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def our_metadata(request: CheckoutRequest) -> dict[str, str]:
    """The ``metadata`` to send with a checkout: the request's own entries plus our checkout
    and customer ids (under ``METADATA_CHECKOUT_ID`` and ``METADATA_CUSTOMER_ID``)."""
    return {
        **dict(request.metadata),
        METADATA_CHECKOUT_ID: request.checkout_id,
        METADATA_CUSTOMER_ID: request.customer.id,
    }


def metadata_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """``obj["metadata"]`` when it is a mapping, else an empty one."""
    value = obj.get("metadata")
    return value if isinstance(value, Mapping) else {}


def our_ids(metadata: Mapping[str, Any]) -> OurIds:
    """(checkout id, customer id, subscription id) of ours in a provider's ``metadata``; an
    absent, empty or non-string value is ``None``."""
    return OurIds(
        _text(metadata.get(METADATA_CHECKOUT_ID)),
        _text(metadata.get(METADATA_CUSTOMER_ID)),
        _text(metadata.get(METADATA_SUBSCRIPTION_ID)),
    )


def money_from_minor(amount: object, currency: object) -> Money | None:
    """A provider's integer amount in the currency's smallest unit and its currency code (any
    case) as :class:`~billing_gql.Money`; ``None`` when the amount is not an integer (a bool,
    a float, a string) or the currency is not a string."""
    if isinstance(amount, bool) or not isinstance(amount, int) or not isinstance(currency, str):
        return None
    return Money(amount, currency.upper())
