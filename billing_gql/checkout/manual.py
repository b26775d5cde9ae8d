"""``completeManualCheckout``: an admin records that a manual checkout was paid."""

from __future__ import annotations

from uuid import UUID

from billing_gql.applier.engine import apply_billing_events
from billing_gql.checkout.service import get_checkout
from billing_gql.context import ServiceContext
from billing_gql.core import checkout as m
from billing_gql.core.checkout import Checkout
from billing_gql.errors import UserInputError
from billing_gql.plugins.types import BillingEvent, EventKind, PaymentInfo

__all__ = ["MANUAL", "complete_manual_checkout"]

MANUAL = "manual"


async def complete_manual_checkout(runtime: ServiceContext, checkout_id: UUID | None) -> Checkout:
    """Record a payment of the amount due and complete the checkout through the same apply
    path as a provider's ``checkout.completed`` (idempotent: a completed one is returned as is).
    Starting a trial records no payment.

    :raises UserInputError: FEATURE_DISABLED (``BILLING_GQL_MANUAL_PROVIDER`` is off),
        NOT_FOUND, INVALID_STATE (not a manual checkout, or FAILED).
    """
    if not runtime.settings.billing.manual_provider:
        raise UserInputError(
            "FEATURE_DISABLED", "the manual provider is off (BILLING_GQL_MANUAL_PROVIDER=1)"
        )
    checkout = await get_checkout(runtime.db.pool, checkout_id) if checkout_id else None
    if checkout is None:
        raise UserInputError("NOT_FOUND", "no such checkout", ["checkoutId"])
    if checkout.provider != MANUAL:
        raise UserInputError(
            "INVALID_STATE", f"this checkout is paid through {checkout.provider}", ["checkoutId"]
        )
    if checkout.status == m.COMPLETED:
        return checkout
    if checkout.status == m.FAILED:
        raise UserInputError("INVALID_STATE", "this checkout failed", ["checkoutId"])
    now = await runtime.clock.now()
    due = checkout.amount_due
    # A first purchase with a trial (the checkout's: a customer's second one has none)
    # charges nothing now, as a card provider would (Checkout.starts_trial).
    payment = None
    if due.minor > 0 and not checkout.starts_trial:
        # One payment per checkout: its provider_ref is unique, so repeats record nothing.
        payment = PaymentInfo(
            provider_ref=f"manual-{checkout.id}",
            amount=due,
            checkout_id=str(checkout.id),
            customer_id=str(checkout.customer_id),
            received_at=now,
        )
    await apply_billing_events(
        runtime,
        MANUAL,
        [
            BillingEvent(
                EventKind.CHECKOUT_COMPLETED, now, checkout_id=str(checkout.id), payment=payment
            )
        ],
    )
    done = await get_checkout(runtime.db.pool, checkout.id)
    assert done is not None
    return done
