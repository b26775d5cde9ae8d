"""The provider base class a payment-provider plugin subclasses.

A plugin returns its ``Provider`` subclasses from the ``register_providers`` hook. The core
instantiates each configured one with a :class:`ProviderContext` and calls its coroutine
methods. Only ``create_checkout``, ``verify_webhook`` and ``parse_webhook`` are required; the
other operations are optional and the capabilities a provider reports follow from which ones
it overrides.

**Ordering.** Deliveries arrive in any order, so every subscription state the core receives is
ordered by the provider's time of it, never by ours: a snapshot's version is
``SubscriptionSnapshot.updated_at`` when set, else the carrying event's ``occurred_at``. A
snapshot strictly newer than the newest one applied is applied; an older one, or a tie (two
changes within one second where the provider's times have whole seconds), is settled by the
core: it calls :meth:`Provider.fetch_subscription` — before opening the apply transaction —
and applies the provider's current state instead. So ``parse_webhook`` need not fetch to order
events (it may, to expand an object), and what an operation or ``fetch_subscription`` returns
should carry ``updated_at`` (the answer's ``Date`` header, or the object's modification time).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from billing_gql.errors import NotSupported
from billing_gql.plugins.refund_types import RefundRequest, RefundResult
from billing_gql.plugins.settings import ProviderSettings
from billing_gql.plugins.types import (
    BillingEvent,
    CheckoutRequest,
    CheckoutSession,
    PlanChangeRequest,
    PortalRequest,
    ProviderCapability,
    ReconcileRequest,
    ReconcileResult,
    StoredDelivery,
    SubscriptionRef,
    SubscriptionSnapshot,
    UsageRecord,
    UsageReportResult,
    WebhookEnvelope,
    WebhookRequest,
)

if TYPE_CHECKING:
    from billing_gql.plugins.http import HttpClientFactory

__all__ = ["Provider", "ProviderContext"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ProviderContext:
    """What the core gives a provider instance."""

    name: str
    settings: ProviderSettings
    """This provider's ``BILLING_GQL_<PROVIDER>_<NAME>`` values."""
    http: HttpClientFactory
    """Builds ``httpx.AsyncClient`` objects with timeouts, retries and the test transport."""
    logger: logging.Logger
    """A logger named ``billing_gql.provider.<name>``; never log secrets."""


class Provider:
    """Base class of a payment provider. Subclass it in your plugin.

    Class attributes describe the provider; override the coroutine methods it supports.
    """

    name: ClassVar[str]
    """Lower-case provider name: the ``/webhooks/{name}`` path segment and the settings prefix."""
    display_name: ClassVar[str]
    required_settings: ClassVar[Sequence[str]] = ()
    """Setting names (``API_KEY`` for ``BILLING_GQL_<NAME>_API_KEY``) without which the provider
    is listed as not configured."""
    optional_settings: ClassVar[Mapping[str, str | None]] = {}
    """Other setting names and their defaults."""
    secret_settings: ClassVar[Sequence[str]] = ()
    """Settings whose values must never be shown (API keys, webhook secrets)."""
    currencies: ClassVar[Sequence[str] | None] = None
    """ISO 4217 codes the provider can charge in; ``None`` for any."""
    needs_provider_ref: ClassVar[bool] = True
    """Whether a checkout needs the plan's reference at this provider (a price/product id)."""
    usage_charge_refs: ClassVar[bool] = False
    """Whether each usage charge needs its own reference at this provider (a Stripe metered
    price, added to the checkout without a quantity). A provider that renews subscriptions
    itself bills their usage too (through :meth:`report_usage`): every charged meter then
    needs this provider's reference, and with this flag every charge too, or a checkout
    answers ``PROVIDER_REF_MISSING`` naming the charge. Push providers
    (``charges_renewals = False``) need neither: the core invoices usage itself."""
    charges_renewals: ClassVar[bool] = True
    """True when the provider renews subscriptions itself (cards on file). False for push
    payments (bank transfers): the core then issues a renewal checkout every period."""
    hosted_checkout: ClassVar[bool] = True
    """True when checkouts send the buyer to a page the provider hosts (``Checkout.url``)."""
    bank_transfer: ClassVar[bool] = False
    """True when checkouts are paid by bank transfer with a payment reference."""
    refunds: ClassVar[bool] = False
    """True when the provider reports refunds (``refund.succeeded`` events)."""
    webhook_ack: ClassVar[Mapping[str, Any]] = {}
    """Extra members of the 2xx body answering a delivery (SePay expects ``"success": true``)."""

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.settings = context.settings
        self.log = context.logger

    # -- required ------------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """Start a checkout at the provider and say how the buyer pays.

        Raise :class:`~billing_gql.errors.ProviderError` (with the provider's message) when the
        provider refuses, :class:`~billing_gql.errors.ProviderUnavailable` when it cannot be
        reached, or :class:`~billing_gql.errors.UserInputError` (``UNSUPPORTED_CURRENCY`` …).
        """
        raise NotImplementedError

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        """Check the delivery's signature or credentials on the raw body, then name the event.

        Called before anything is stored. Raise
        :class:`~billing_gql.errors.WebhookSignatureError` for a missing, wrong or stale
        signature (answered 401, nothing stored) and
        :class:`~billing_gql.errors.WebhookPayloadError` when a correctly signed body cannot be
        read (answered 400). Compare secrets in constant time.
        """
        raise NotImplementedError

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        """Turn a stored delivery into normalized events (an empty list: nothing to apply).

        Runs after storing and again on replays, so it must not re-check timestamps. It may call
        the provider (to expand an object). Raising keeps the delivery as failed, retried later.
        Date each event by the provider's time of the fact (``occurred_at``); a snapshot fetched
        here should carry the fetch's time in ``updated_at``. Out-of-order and same-second
        deliveries are settled by the core through :meth:`fetch_subscription` (module
        docstring, "Ordering"), not here.
        """
        raise NotImplementedError

    # -- optional ------------------------------------------------------------------------------

    def payment_reference(self) -> str | None:
        """A fresh payment reference for a bank-transfer checkout (``None``: not used).

        The core stores it under a unique constraint and asks again on a collision.
        """
        return None

    async def fetch_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        """The subscription's current state at the provider (``None``: it does not exist),
        with ``updated_at`` set to the provider's time of that state.

        The core calls it, outside any database transaction, when a delivered snapshot (or an
        operation's answer) is not strictly newer than the state already applied — an older
        delivery, or a tie of whole-second times — and applies the answer instead; implement
        it whenever the provider can be asked. Reconciliation may use it too.
        """
        raise NotSupported(f"{self.name} cannot fetch subscriptions")

    async def cancel_subscription(
        self, ref: SubscriptionRef, *, at_period_end: bool
    ) -> SubscriptionSnapshot | None:
        """Cancel at the provider, now or at period end; return the new state if known.

        Here and in the other subscription operations, set the returned snapshot's
        ``updated_at`` to the provider's time of that state: it orders the provider's own
        deliveries about the change (and older ones still in flight) against it. Without it
        the state is applied but leaves the subscription's version where it was.
        """
        raise NotSupported(f"{self.name} cannot cancel subscriptions")

    async def resume_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        """Undo a pending cancel or resume a pause at the provider."""
        raise NotSupported(f"{self.name} cannot resume subscriptions")

    async def pause_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        """Pause collection at the provider."""
        raise NotSupported(f"{self.name} cannot pause subscriptions")

    async def change_subscription_plan(
        self, request: PlanChangeRequest
    ) -> SubscriptionSnapshot | None:
        """Move the subscription to ``request.new_plan`` at the provider."""
        raise NotSupported(f"{self.name} cannot change plans")

    async def create_portal_session(self, request: PortalRequest) -> str:
        """A short-lived URL of the provider's customer portal."""
        raise NotSupported(f"{self.name} has no customer portal")

    async def report_usage(self, records: Sequence[UsageRecord]) -> UsageReportResult:
        """Forward usage the provider bills. Must be idempotent on ``UsageRecord.event_id``;
        raise :class:`~billing_gql.errors.ProviderUnavailable` to be retried later."""
        raise NotSupported(f"{self.name} does not take usage")

    async def refund_payment(self, request: RefundRequest) -> RefundResult:
        """Refund (part of) a payment through the provider's API, idempotently on
        ``request.idempotency_key`` (our refund id); send ``request.metadata``. Raise
        :class:`~billing_gql.errors.ProviderError` when the provider refuses (more than is
        left, a payment it cannot refund), :class:`~billing_gql.errors.ProviderUnavailable`
        when it cannot be reached. Without it, ``refundPayment`` records a refund made outside
        the service (the operator's bank reference) instead."""
        raise NotSupported(f"{self.name} cannot make refunds")

    async def reconcile(self, request: ReconcileRequest) -> ReconcileResult:
        """Read the provider's state and return the facts we missed."""
        raise NotSupported(f"{self.name} cannot reconcile")

    def reconcile_interval(self) -> timedelta | None:
        """How often the worker should run :meth:`reconcile` on its own (``None``: never;
        ``billing-gql reconcile NAME`` still can). Its schedule and the cursor each run
        returns are kept in the database, so a restart neither skips nor repeats a run."""
        return None

    async def aclose(self) -> None:
        """Release resources (HTTP clients) at shutdown."""

    # -- derived -------------------------------------------------------------------------------

    @classmethod
    def _overrides(cls, method: str) -> bool:
        return getattr(cls, method) is not getattr(Provider, method)

    @classmethod
    def makes_refunds(cls) -> bool:
        """True when the provider moves money back through its API (it overrides
        :meth:`refund_payment`); otherwise a refund is made outside and recorded."""
        return cls._overrides("refund_payment")

    @classmethod
    def capabilities(cls) -> frozenset[str]:
        """What the provider can do, from the closed list :class:`ProviderCapability`
        (docs/api.md#provider-capabilities)."""
        cap = ProviderCapability
        caps = {cap.CHECKOUT}
        if cls.hosted_checkout:
            caps.add(cap.HOSTED_CHECKOUT)
        if cls.bank_transfer:
            caps.add(cap.BANK_TRANSFER)
        if cls.charges_renewals:
            caps.add(cap.RECURRING)
        if cls.refunds or cls.makes_refunds():
            caps.add(cap.REFUND)
        optional = {
            "cancel_subscription": cap.CANCEL,
            "resume_subscription": cap.RESUME,
            "pause_subscription": cap.PAUSE,
            "change_subscription_plan": cap.CHANGE_PLAN,
            "create_portal_session": cap.PORTAL,
            "report_usage": cap.USAGE,
            "reconcile": cap.RECONCILE,
        }
        caps.update(c for method, c in optional.items() if cls._overrides(method))
        return frozenset(caps)

    @classmethod
    def capabilities_for(cls, settings: ProviderSettings) -> frozenset[str]:
        """What the provider can do with these settings: what the ``providers`` query and
        ``billing-gql plugins`` list and :meth:`supports` answers (configured or not).

        Default: :meth:`capabilities`. Override it when an optional setting enables a
        capability (SePay reconciles only with an ``API_TOKEN``), so that nothing is offered
        that would then answer ``NOT_SUPPORTED``.
        """
        return cls.capabilities()

    def supports(self, capability: str) -> bool:
        """Whether this configured instance can do ``capability``."""
        return capability in type(self).capabilities_for(self.settings)

    def now(self) -> datetime:
        """Wall-clock UTC now (for signature tolerance; billing time comes from the core)."""
        return _utcnow()
