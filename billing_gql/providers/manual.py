"""The built-in ``manual`` provider: checkouts an admin completes by hand.

Enabled by ``BILLING_GQL_MANUAL_PROVIDER=1``; for development, demos and tests without a provider
account. A manual checkout has no URL; the admin mutation ``completeManualCheckout`` records the
payment and completes it. Subscriptions renew by push: the core issues a renewal checkout every
period, which is completed the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from billing_gql.errors import WebhookSignatureError
from billing_gql.plugins.hookspecs import hookimpl
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import (
    BillingEvent,
    CheckoutRequest,
    CheckoutSession,
    PlanChangeRequest,
    StoredDelivery,
    SubscriptionRef,
    SubscriptionSnapshot,
    WebhookEnvelope,
    WebhookRequest,
)


class ManualProvider(Provider):
    """Checkouts completed by an admin; the core runs renewals and cancellations itself."""

    name = "manual"
    display_name = "Manual (admin-completed)"
    needs_provider_ref = False
    charges_renewals = False
    hosted_checkout = False

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        return CheckoutSession(provider_checkout_id=None, url=None)

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        raise WebhookSignatureError("the manual provider takes no webhooks")

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        return []

    async def cancel_subscription(
        self, ref: SubscriptionRef, *, at_period_end: bool
    ) -> SubscriptionSnapshot | None:
        return None  # nothing to do anywhere else: the core records the cancel

    async def resume_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        return None

    async def pause_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        return None

    async def change_subscription_plan(
        self, request: PlanChangeRequest
    ) -> SubscriptionSnapshot | None:
        return None


@hookimpl
def register_providers() -> Sequence[type[Provider]]:
    return [ManualProvider]
