"""Small pieces every provider plugin needs: our ids in the provider's metadata, its integer
amounts as :class:`~billing_gql.Money`, the lazily built API client, a delivery's JSON body,
the dispatch of an event type to its handler and the snapshot event.

Our ids travel to the provider in an object's ``metadata`` (:func:`our_metadata`) and come
back in its webhooks (:func:`metadata_of`, :func:`our_ids`), so every delivery finds its
checkout, customer and subscription.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from billing_gql.errors import UserInputError, WebhookPayloadError
from billing_gql.money import Money
from billing_gql.plugins.types import (
    METADATA_CHECKOUT_ID,
    METADATA_CUSTOMER_ID,
    METADATA_SUBSCRIPTION_ID,
    BillingEvent,
    CheckoutRequest,
    EventKind,
    SubscriptionRef,
    SubscriptionSnapshot,
)

__all__ = [
    "LazyClient",
    "OurIds",
    "handler_for",
    "metadata_of",
    "money_from_minor",
    "operation_key",
    "our_ids",
    "our_metadata",
    "provider_subscription_id",
    "reread_subscriptions",
    "subscription_updated",
    "webhook_json",
]


class _Closable(Protocol):
    async def aclose(self) -> None: ...


ClientT = TypeVar("ClientT", bound=_Closable)
HandlerT = TypeVar("HandlerT")


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


class LazyClient(Generic[ClientT]):
    """A provider's API client, built by ``build`` on first call and closed by :meth:`aclose`
    (a call after that builds a new one). A provider keeps one as ``self.api`` and closes it
    in its own ``aclose``."""

    def __init__(self, build: Callable[[], ClientT]) -> None:
        self._build = build
        self._client: ClientT | None = None

    def __call__(self) -> ClientT:
        if self._client is None:
            self._client = self._build()
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def webhook_json(body: bytes, what: str) -> dict[str, Any]:
    """A delivery's body as a JSON object; :class:`~billing_gql.WebhookPayloadError` (``body
    is not JSON: …`` or ``body is not <what>``) otherwise."""
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise WebhookPayloadError(f"body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise WebhookPayloadError(f"body is not {what}")
    return event


def handler_for(
    handlers: Mapping[str, HandlerT], event_type: object, log: logging.Logger, event: str
) -> HandlerT | None:
    """The handler of ``event_type``; ``None``, with an info line ``<event> of type <type>
    ignored``, for a type billing-gql does not use (or one that is not a string)."""
    handler = handlers.get(event_type) if isinstance(event_type, str) else None
    if handler is None:
        log.info("%s of type %s ignored", event, event_type)
    return handler


def subscription_updated(snapshot: SubscriptionSnapshot, occurred_at: datetime) -> BillingEvent:
    """The ``SUBSCRIPTION_UPDATED`` event carrying ``snapshot`` and the checkout and customer
    ids it names."""
    return BillingEvent(
        EventKind.SUBSCRIPTION_UPDATED,
        occurred_at,
        checkout_id=snapshot.checkout_id,
        customer_id=snapshot.customer_id,
        provider_customer_id=snapshot.provider_customer_id,
        external_customer_id=snapshot.external_customer_id,
        subscription=snapshot,
    )


def provider_subscription_id(ref: SubscriptionRef, message: str) -> str:
    """``ref.provider_subscription_id``; a :class:`~billing_gql.UserInputError`
    ``INVALID_STATE`` saying ``message`` (on ``subscriptionId``) while the provider has none."""
    if not ref.provider_subscription_id:
        raise UserInputError("INVALID_STATE", message, ["subscriptionId"])
    return ref.provider_subscription_id


def operation_key(ref: SubscriptionRef, operation: str) -> str:
    """A fresh idempotency key for one operation on a subscription, for the HTTP client to
    reuse on that request's retries. A key shared by two operations would replay the
    provider's answer to the first one (cancel, resume, cancel again …)."""
    return f"billing-gql-{ref.subscription_id}-{operation}-{uuid.uuid4().hex}"


async def reread_subscriptions(
    refs: Sequence[SubscriptionRef],
    read: Callable[[str], Awaitable[tuple[Mapping[str, Any] | None, datetime | None]]],
    snapshot: Callable[[Mapping[str, Any], datetime], SubscriptionSnapshot],
    log: logging.Logger,
    provider: str,
) -> list[BillingEvent]:
    """A reconcile's ``SUBSCRIPTION_UPDATED`` events: each subscription the provider knows is
    read again (``read(provider_subscription_id)`` answers it and the provider's time of the
    read, or ``(None, None)``), turned into ``snapshot(sub, read_at)`` and dated ``read_at``, so
    it wins over any older event but never over a newer one. One the provider no longer has is
    skipped with a warning; our customer id fills in where the snapshot names none."""
    events: list[BillingEvent] = []
    for ref in refs:
        if not ref.provider_subscription_id:
            continue
        sub, read_at = await read(ref.provider_subscription_id)
        if sub is None or read_at is None:
            log.warning(
                "reconcile: %s has no subscription %s (ours %s)",
                provider,
                ref.provider_subscription_id,
                ref.subscription_id,
            )
            continue
        state = snapshot(sub, read_at)
        events.append(
            BillingEvent(
                EventKind.SUBSCRIPTION_UPDATED,
                read_at,
                customer_id=state.customer_id or ref.customer.id,
                provider_customer_id=state.provider_customer_id,
                subscription=state,
            )
        )
    return events
