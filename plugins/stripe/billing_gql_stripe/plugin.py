"""The plugin glue: the ``stripe`` provider registered with billing-gql.

Registered through the ``billing_gql`` entry-point group (``stripe =
"billing_gql_stripe.plugin"``). Settings: ``BILLING_GQL_STRIPE_API_KEY`` and
``BILLING_GQL_STRIPE_WEBHOOK_SECRET`` (required), ``BILLING_GQL_STRIPE_API_BASE`` (default
``https://api.stripe.com``). Stripe is called through the official ``stripe`` SDK
(:mod:`billing_gql_stripe.api`); the webhook check (the SDK's verifier) and the event mapping
live in :mod:`billing_gql_stripe.webhooks`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from billing_gql import (
    BillingEvent,
    BillingInterval,
    CheckoutRequest,
    CheckoutSession,
    LazyClient,
    NotSupported,
    PlanChangeRequest,
    PortalRequest,
    ProrationBehavior,
    Provider,
    ProviderContext,
    ProviderError,
    ReconcileRequest,
    ReconcileResult,
    RefundRequest,
    RefundResult,
    StoredDelivery,
    SubscriptionRef,
    SubscriptionSnapshot,
    UsageRecord,
    UsageReportResult,
    UserInputError,
    WebhookEnvelope,
    WebhookPayloadError,
    WebhookRequest,
    hookimpl,
    operation_key,
    our_metadata,
    provider_subscription_id,
    reread_subscriptions,
)
from billing_gql_stripe.api import DEFAULT_API_BASE, StripeApi, StripeError
from billing_gql_stripe.mapping import first_item, subscription_snapshot
from billing_gql_stripe.webhooks import EventParser, read_envelope

__all__ = ["PRORATION", "StripeProvider", "register_providers"]

PRORATION: Mapping[ProrationBehavior, str] = {
    ProrationBehavior.CREATE_PRORATIONS: "create_prorations",
    ProrationBehavior.NONE: "none",
    ProrationBehavior.ALWAYS_INVOICE: "always_invoice",
}

# Stripe accepts a Checkout Session expiry between 30 minutes and 24 hours from now.
_MIN_EXPIRY = timedelta(minutes=30, seconds=30)
_MAX_EXPIRY = timedelta(hours=24)


def _plain(value: Decimal) -> str:
    """A meter value in plain notation: Stripe rejects exponents such as ``1E+3``."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _metered_lines(request: CheckoutRequest) -> list[dict[str, Any]]:
    """One line per usage charge: its metered price, without a quantity (Stripe bills a
    metered price from its meter's events and refuses a quantity for it)."""
    lines: list[dict[str, Any]] = []
    for charge in request.plan.usage_charges:
        if request.plan.interval == BillingInterval.ONE_TIME:
            raise NotSupported("a one-time Stripe checkout cannot bill usage")
        if not charge.provider_ref:
            raise UserInputError(
                "PROVIDER_REF_MISSING",
                f"plan {request.plan.code!r}: the usage charge on meter "
                f"{charge.meter_code!r} has no Stripe metered price for "
                f"{request.amount.currency}",
                ["planCode"],
            )
        lines.append({"price": charge.provider_ref})
    return lines


class StripeProvider(Provider):
    """Hosted Stripe Checkout, subscriptions renewed by Stripe, webhooks signed by Stripe."""

    name = "stripe"
    display_name = "Stripe"
    required_settings = ("API_KEY", "WEBHOOK_SECRET")
    optional_settings = {"API_BASE": DEFAULT_API_BASE}
    secret_settings = ("API_KEY", "WEBHOOK_SECRET")
    currencies = None  # the Stripe price decides; a plan needs a price per currency
    needs_provider_ref = True
    usage_charge_refs = True  # each usage charge sells through a Stripe metered price
    charges_renewals = True
    hosted_checkout = True
    refunds = True

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.api = LazyClient(self._build_api)
        """The Stripe client (built on first use, closed by :meth:`aclose`)."""
        self.events = EventParser(self.api, self.log)

    def _build_api(self) -> StripeApi:
        base = self.settings.get("API_BASE") or DEFAULT_API_BASE
        return StripeApi(
            self.context.http, api_key=self.settings["API_KEY"], api_base=base, logger=self.log
        )

    async def aclose(self) -> None:
        await self.api.aclose()

    # -- checkout ------------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """A hosted Checkout Session for the plan's Stripe price.

        The idempotency key is derived from our checkout, so a retried creation returns the
        session already made instead of a second one.
        """
        if request.purpose != "new":
            raise NotSupported("Stripe renews subscriptions itself; no renewal checkout")
        price = request.plan.provider_ref
        if not price:
            raise UserInputError(
                "PROVIDER_REF_MISSING",
                f"plan {request.plan.code!r} has no Stripe price for {request.amount.currency}",
                ["planCode"],
            )
        if not request.success_url:
            raise UserInputError(
                "INVALID_INPUT", "a Stripe checkout needs a successUrl", ["successUrl"]
            )
        one_time = request.plan.interval == BillingInterval.ONE_TIME
        meta = our_metadata(request)
        params: dict[str, Any] = {
            "mode": "payment" if one_time else "subscription",
            "line_items": [
                {"price": price, "quantity": request.quantity},
                *_metered_lines(request),
            ],
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "client_reference_id": request.checkout_id,
            "metadata": meta,
        }
        now = self.now()
        if now + _MIN_EXPIRY <= request.expires_at <= now + _MAX_EXPIRY:
            params["expires_at"] = request.expires_at
        else:
            # Outside Stripe's window (a short TTL, or a test clock far from real time):
            # Stripe's default of 24 h applies, and our own expiry still closes the checkout.
            self.log.debug("checkout %s: expiry outside Stripe's window", request.checkout_id)
        customer = request.customer
        if customer.provider_customer_id:
            params["customer"] = customer.provider_customer_id
        else:
            params["customer_email"] = customer.email
            if one_time:
                params["customer_creation"] = "always"
        if one_time:
            params["payment_intent_data"] = {"metadata": meta}
        else:
            params["subscription_data"] = {
                "metadata": meta,
                "trial_period_days": request.plan.trial_days or None,
            }
        key = request.idempotency_key or f"billing-gql-checkout-{request.checkout_id}"
        session = await self.api().create_checkout_session(params, idempotency_key=key)
        customer_id = session.get("customer")
        return CheckoutSession(
            provider_checkout_id=str(session["id"]),
            url=session.get("url") if isinstance(session.get("url"), str) else None,
            provider_customer_id=customer_id if isinstance(customer_id, str) else None,
        )

    # -- webhooks ------------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        return read_envelope(request, self.settings["WEBHOOK_SECRET"])

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        try:
            event = delivery.json()
        except ValueError as exc:
            raise WebhookPayloadError(f"body is not JSON: {exc}") from None
        if not isinstance(event, dict):
            raise WebhookPayloadError("body is not a Stripe event object")
        return await self.events.parse(event)

    # -- subscriptions -------------------------------------------------------------------------

    @staticmethod
    def _stripe_id(ref: SubscriptionRef) -> str:
        return provider_subscription_id(ref, "the subscription is not known to Stripe yet")

    async def fetch_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        """``GET /v1/subscriptions/{id}`` as a snapshot dated by Stripe's ``Date`` header
        (``None``: Stripe has none). The core calls it to settle deliveries that are not newer
        than the state it holds (Stripe's times have whole seconds)."""
        if not ref.provider_subscription_id:
            return None
        sub, read_at = await self.api().retrieve_subscription_at(ref.provider_subscription_id)
        return subscription_snapshot(sub, updated_at=read_at) if sub is not None else None

    # Each operation answers the subscription as Stripe left it, dated by the answer's ``Date``
    # header: Stripe's clock, so that Stripe's own deliveries about the change (and older ones
    # still in flight) are ordered against it.

    async def cancel_subscription(
        self, ref: SubscriptionRef, *, at_period_end: bool
    ) -> SubscriptionSnapshot | None:
        """At period end: ``cancel_at_period_end=true``; now: ``DELETE``."""
        sub_id = self._stripe_id(ref)
        if at_period_end:
            sub, at = await self.api().update_subscription_at(
                sub_id,
                {"cancel_at_period_end": True},
                idempotency_key=operation_key(ref, "cancel-at-period-end"),
            )
        else:
            sub, at = await self.api().cancel_subscription_at(sub_id)
        return subscription_snapshot(sub, updated_at=at)

    async def resume_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        """Undo a pending cancel, clear a collection pause, or resume a paused subscription."""
        sub_id = self._stripe_id(ref)
        api = self.api()
        found, at = await api.retrieve_subscription_at(sub_id)
        if found is None or at is None:
            raise UserInputError("INVALID_STATE", "Stripe no longer has this subscription")
        sub = found
        if sub.get("status") == "paused":
            sub, at = await api.resume_subscription_at(
                sub_id, idempotency_key=operation_key(ref, "resume")
            )
        params: dict[str, Any] = {}
        if sub.get("pause_collection"):
            params["pause_collection"] = ""  # an empty value unsets it
        if sub.get("cancel_at_period_end"):
            params["cancel_at_period_end"] = False
        elif sub.get("cancel_at"):
            params["cancel_at"] = ""
        if params:
            sub, at = await api.update_subscription_at(
                sub_id, params, idempotency_key=operation_key(ref, "uncancel")
            )
        return subscription_snapshot(sub, updated_at=at)

    async def pause_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        """``pause_collection[behavior]=void``: Stripe stops collecting until resumed."""
        sub, at = await self.api().update_subscription_at(
            self._stripe_id(ref),
            {"pause_collection": {"behavior": "void"}},
            idempotency_key=operation_key(ref, "pause"),
        )
        return subscription_snapshot(sub, updated_at=at)

    async def change_subscription_plan(
        self, request: PlanChangeRequest
    ) -> SubscriptionSnapshot | None:
        """Swap the subscription item's price, with our proration mapped to Stripe's."""
        ref = request.subscription
        sub_id = self._stripe_id(ref)
        if ref.plan.usage_charges or request.new_plan.usage_charges:
            # The swap moves the base price only; the metered items would be left behind.
            raise NotSupported("Stripe plan changes of plans with usage charges are not supported")
        new_price = request.new_plan.provider_ref
        if not new_price:
            raise UserInputError(
                "PROVIDER_REF_MISSING",
                f"plan {request.new_plan.code!r} has no Stripe price for {ref.currency}",
                ["planCode"],
            )
        api = self.api()
        current = await api.retrieve_subscription(sub_id)
        if current is None:
            raise UserInputError("INVALID_STATE", "Stripe no longer has this subscription")
        item_id = first_item(current).get("id")
        if not isinstance(item_id, str):
            raise ProviderError("Stripe: the subscription has no item to change")
        sub, at = await api.update_subscription_at(
            sub_id,
            {
                "items": [{"id": item_id, "price": new_price, "quantity": ref.quantity}],
                "proration_behavior": PRORATION[request.proration],
            },
            idempotency_key=operation_key(ref, "change-plan"),
        )
        return subscription_snapshot(sub, updated_at=at)

    # -- portal, usage, reconciliation ---------------------------------------------------------

    async def create_portal_session(self, request: PortalRequest) -> str:
        """A Billing Portal session URL for the customer's Stripe customer."""
        customer = request.customer.provider_customer_id
        if not customer:
            raise UserInputError(
                "INVALID_STATE",
                "the customer has no Stripe customer yet (no completed Stripe checkout)",
                ["customerId"],
            )
        session = await self.api().create_portal_session(
            {"customer": customer, "return_url": request.return_url},
            idempotency_key=f"billing-gql-portal-{request.customer.id}-{uuid.uuid4().hex}",
        )
        url = session.get("url")
        if not isinstance(url, str):
            raise ProviderError("Stripe: the portal session has no url")
        return url

    async def report_usage(self, records: Sequence[UsageRecord]) -> UsageReportResult:
        """One meter event per record; ``identifier`` (and the idempotency key) is our event
        id, so a record sent twice is counted once. A record Stripe refuses (too old, a bad
        value) is rejected for good; an account-level refusal (bad key) or an outage raises,
        so the whole batch is retried."""
        accepted = 0
        rejected: dict[str, str] = {}
        api = self.api()
        for record in records:
            customer = record.customer.provider_customer_id
            if not customer:
                rejected[record.event_id] = "the customer has no Stripe customer"
                continue
            params = {
                "event_name": record.provider_event_name,
                "payload": {"stripe_customer_id": customer, "value": _plain(record.value)},
                "identifier": record.event_id,
                "timestamp": record.timestamp,
            }
            try:
                await api.create_meter_event(
                    params, idempotency_key=f"billing-gql-usage-{record.event_id}"
                )
            except StripeError as exc:
                if exc.status in (401, 403, 404):
                    # The account (key, permissions, API base) is wrong, not this record:
                    # let the whole batch be retried once the operator fixed it.
                    raise
                if exc.param == "identifier" or exc.error_type == "idempotency_error":
                    accepted += 1  # Stripe already has an event with this identifier
                else:
                    rejected[record.event_id] = exc.message
                continue
            accepted += 1
        return UsageReportResult(accepted=accepted, rejected=rejected)

    async def _refund_target(self, payment_ref: str) -> dict[str, str]:
        """What ``POST /v1/refunds`` refunds for the payment we recorded: a subscription
        invoice's payment intent (its invoice payments), a payment intent, a charge, or a
        one-time Checkout Session's payment intent."""
        api = self.api()
        if payment_ref.startswith("in_"):
            for item in await api.list_invoice_payments({"invoice": payment_ref}):
                paid = item.get("payment")
                if isinstance(paid, dict):
                    for key in ("payment_intent", "charge"):
                        if isinstance(paid.get(key), str):
                            return {key: paid[key]}
            raise ProviderError(f"Stripe: invoice {payment_ref} has no payment to refund")
        if payment_ref.startswith("cs_"):
            session = await api.retrieve_checkout_session(payment_ref)
            intent = session.get("payment_intent")
            if not isinstance(intent, str):
                raise ProviderError(f"Stripe: checkout {payment_ref} collected no payment")
            return {"payment_intent": intent}
        if payment_ref.startswith("ch_"):
            return {"charge": payment_ref}
        return {"payment_intent": payment_ref}

    async def refund_payment(self, request: RefundRequest) -> RefundResult:
        """``POST /v1/refunds`` with our refund id as the idempotency key and in the
        metadata (the operator's reason too: Stripe's own ``reason`` is a closed list)."""
        params: dict[str, Any] = {
            **await self._refund_target(request.payment_provider_ref),
            "amount": request.amount.minor,
            "metadata": dict(request.metadata),
        }
        if request.reason:
            params["metadata"]["billing_gql_reason"] = request.reason[:500]
        refund = await self.api().create_refund(params, idempotency_key=request.idempotency_key)
        status = refund.get("status")
        failed = status in ("failed", "canceled")
        return RefundResult(
            provider_refund_id=str(refund["id"]),
            status="succeeded" if status == "succeeded" else "failed" if failed else "pending",
            failure_reason=f"Stripe: {refund.get('failure_reason') or status}" if failed else None,
        )

    async def reconcile(self, request: ReconcileRequest) -> ReconcileResult:
        """Re-read each subscription from Stripe; each snapshot is dated by Stripe's clock at
        the moment it was read, so it wins over any older event but not a newer one."""
        events = await reread_subscriptions(
            request.subscriptions,
            self.api().retrieve_subscription_at,
            lambda sub, read_at: subscription_snapshot(sub, updated_at=read_at),
            self.log,
            "Stripe",
        )
        return ReconcileResult(events=events)


@hookimpl
def register_providers() -> Sequence[type[Provider]]:
    """The Stripe provider."""
    return [StripeProvider]
