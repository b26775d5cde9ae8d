"""The plugin glue: the ``acmepay`` provider registered with billing-gql.

billing-gql finds this module through the ``billing_gql`` entry-point group (``acmepay =
"billing_gql_acmepay.plugin"`` in ``pyproject.toml``) and calls its ``register_providers``
hook. Settings: ``BILLING_GQL_ACMEPAY_API_KEY`` and ``BILLING_GQL_ACMEPAY_WEBHOOK_SECRET``
(required, secret), ``BILLING_GQL_ACMEPAY_API_BASE`` (default ``https://api.acmepay.example``).
HTTP calls live in :mod:`billing_gql_acmepay.api`, the webhook check and event mapping in
:mod:`billing_gql_acmepay.webhooks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from billing_gql import (
    BillingEvent,
    BillingInterval,
    CheckoutRequest,
    CheckoutSession,
    LazyClient,
    NotSupported,
    Provider,
    ProviderContext,
    ProviderError,
    ReconcileRequest,
    ReconcileResult,
    StoredDelivery,
    SubscriptionRef,
    SubscriptionSnapshot,
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
from billing_gql_acmepay.api import DEFAULT_API_BASE, AcmePayApi
from billing_gql_acmepay.mapping import money, subscription_snapshot, text
from billing_gql_acmepay.webhooks import EventMapper, read_envelope

__all__ = ["AcmePayProvider", "register_providers"]

# AcmePay accepts a checkout expiry between 5 minutes and 7 days ahead (by its clock).
_MIN_EXPIRY = timedelta(minutes=5, seconds=30)
_MAX_EXPIRY = timedelta(days=7)


def _snapshot(sub: Mapping[str, Any]) -> SubscriptionSnapshot:
    """A subscription AcmePay's API answered with; an unreadable one is a provider error."""
    try:
        return subscription_snapshot(sub)
    except WebhookPayloadError as exc:
        raise ProviderError(f"AcmePay answered with an unreadable subscription: {exc}") from None


class AcmePayProvider(Provider):
    """Hosted AcmePay checkout pages; AcmePay renews subscriptions and signs its webhooks."""

    name = "acmepay"
    display_name = "AcmePay"
    required_settings = ("API_KEY", "WEBHOOK_SECRET")
    optional_settings = {"API_BASE": DEFAULT_API_BASE}
    secret_settings = ("API_KEY", "WEBHOOK_SECRET")
    currencies = ("USD", "EUR", "GBP")
    needs_provider_ref = True  # a plan sells through an AcmePay price (price_…)
    charges_renewals = True
    hosted_checkout = True
    refunds = True

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.api = LazyClient(self._build_api)
        """The AcmePay client, built on first use (closed by :meth:`aclose`)."""
        self.events = EventMapper(self.log)

    def _build_api(self) -> AcmePayApi:
        key, base = self.settings["API_KEY"], self.settings.get("API_BASE") or DEFAULT_API_BASE
        return AcmePayApi(self.context.http, api_key=key, api_base=base, logger=self.log)

    async def aclose(self) -> None:
        await self.api.aclose()

    # -- checkout ------------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """A hosted AcmePay checkout for the plan's AcmePay price.

        Our ids travel in ``metadata`` (AcmePay copies them onto the subscription and payments,
        so every webhook names our checkout and customer). ``request.idempotency_key`` is
        stable for this checkout: a retried creation returns the checkout already made.
        """
        if request.purpose != "new":
            # Only push providers (charges_renewals = False) are asked for renewal checkouts.
            raise NotSupported("AcmePay renews subscriptions itself; no renewal checkout")
        price = request.plan.provider_ref
        if not price:
            raise UserInputError(
                "PROVIDER_REF_MISSING",
                f"plan {request.plan.code!r} has no AcmePay price for {request.amount.currency}",
                ["planCode"],
            )
        params: dict[str, Any] = {
            "price": price,
            "quantity": request.quantity,
            "metadata": our_metadata(request),
        }
        if request.plan.trial_days and request.plan.interval != BillingInterval.ONE_TIME:
            params["trial_days"] = request.plan.trial_days
        customer = request.customer
        if customer.provider_customer_id:
            params["customer"] = customer.provider_customer_id
        else:
            params["customer_reference"] = customer.external_id
            if customer.email:
                params["customer_email"] = customer.email
        if request.success_url:
            params["success_url"] = request.success_url
        if request.cancel_url:
            params["cancel_url"] = request.cancel_url
        # ``expires_at`` is billing time, which a test clock may hold far from AcmePay's clock:
        # send it only when AcmePay would take it; our own expiry closes the checkout anyway.
        now = self.now()
        if now + _MIN_EXPIRY <= request.expires_at <= now + _MAX_EXPIRY:
            params["expires_at"] = request.expires_at.isoformat()
        created = await self.api().create_checkout(params, idempotency_key=request.idempotency_key)
        url = text(created.get("url"))
        checkout_id = text(created.get("id"))
        if url is None or checkout_id is None:
            raise ProviderError("AcmePay: the checkout came back without an id or url")
        try:
            charged = money(created.get("amount"), created.get("currency"))
        except WebhookPayloadError as exc:
            raise ProviderError(f"AcmePay: the checkout's amount is unreadable: {exc}") from None
        if charged != request.amount:
            # A price reference pointing at another amount would bill the buyer something other
            # than the catalog says: refuse rather than sell at the wrong price.
            raise ProviderError(
                f"AcmePay price {price} charges {charged}, the plan {request.amount}",
                field=["planCode"],
            )
        return CheckoutSession(
            provider_checkout_id=checkout_id,
            url=url,
            provider_customer_id=text(created.get("customer")),
        )

    # -- webhooks ------------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        """The ``AcmePay-Signature`` check on the raw body (see :mod:`.webhooks`)."""
        return read_envelope(request, self.settings["WEBHOOK_SECRET"])

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        """The delivery's normalized events; no timestamp check here (replays parse again)."""
        return self.events.parse(delivery)

    # -- subscriptions -------------------------------------------------------------------------

    @staticmethod
    def _acmepay_id(ref: SubscriptionRef) -> str:
        return provider_subscription_id(ref, "AcmePay does not know this subscription yet")

    async def fetch_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        """``GET /v1/subscriptions/{id}`` as a snapshot (``None``: AcmePay has none)."""
        if not ref.provider_subscription_id:
            return None
        found, _ = await self.api().get_subscription(ref.provider_subscription_id)
        return _snapshot(found) if found is not None else None

    async def cancel_subscription(
        self, ref: SubscriptionRef, *, at_period_end: bool
    ) -> SubscriptionSnapshot | None:
        """Schedule the end at the period end, or end it now."""
        sub = await self.api().cancel_subscription(
            self._acmepay_id(ref),
            at_period_end=at_period_end,
            idempotency_key=operation_key(
                ref, "cancel-at-period-end" if at_period_end else "cancel-now"
            ),
        )
        return _snapshot(sub)

    async def resume_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        """Undo a scheduled end (AcmePay has no pause to resume)."""
        sub = await self.api().resume_subscription(
            self._acmepay_id(ref), idempotency_key=operation_key(ref, "resume")
        )
        return _snapshot(sub)

    async def reconcile(self, request: ReconcileRequest) -> ReconcileResult:
        """Re-read every subscription we hold at AcmePay. Each snapshot is dated by AcmePay's
        clock when it was read, so it wins over any older event but never over a newer one."""
        events = await reread_subscriptions(
            request.subscriptions,
            self.api().get_subscription,
            lambda sub, _read_at: _snapshot(sub),
            self.log,
            "AcmePay",
        )
        return ReconcileResult(events=events)


@hookimpl
def register_providers() -> Sequence[type[Provider]]:
    """The AcmePay provider."""
    return [AcmePayProvider]
