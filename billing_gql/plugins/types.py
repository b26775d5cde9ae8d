"""The normalized values that cross the plugin boundary, all frozen dataclasses.

A provider plugin never touches a table: the core hands it requests built from these types and
receives these types back. Times are timezone-aware UTC ``datetime``; money is
:class:`billing_gql.money.Money` (integer minor units); ids named ``*_id`` without a
``provider_`` prefix are billing-gql's own (opaque strings), ``provider_*`` ids are the
provider's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from billing_gql.money import Money
from billing_gql.plugins.invoice_types import ProviderInvoice, ProviderInvoiceLine
from billing_gql.plugins.reversals import DisputeInfo, RefundInfo

__all__ = [
    "METADATA_CHECKOUT_ID",
    "METADATA_CUSTOMER_ID",
    "METADATA_REFUND_ID",
    "METADATA_SUBSCRIPTION_ID",
    "BankTransferInstructions",
    "BillingEvent",
    "BillingInterval",
    "CheckoutRequest",
    "CheckoutSession",
    "CustomerInfo",
    "DisputeInfo",
    "DomainEvent",
    "EventKind",
    "FeatureGrant",
    "PaymentInfo",
    "PlanChangeRequest",
    "PlanInfo",
    "PortalRequest",
    "ProrationBehavior",
    "ProviderCapability",
    "ProviderGrant",
    "ProviderInvoice",
    "ProviderInvoiceLine",
    "ReconcileRequest",
    "ReconcileResult",
    "RefundInfo",
    "StoredDelivery",
    "SubscriptionRef",
    "SubscriptionSnapshot",
    "SubscriptionStatus",
    "UsageChargeInfo",
    "UsageRecord",
    "UsageReportResult",
    "WebhookEnvelope",
    "WebhookRequest",
]

# Metadata keys under which our ids travel through the provider and come back in webhooks.
METADATA_CHECKOUT_ID = "billing_gql_checkout_id"
METADATA_CUSTOMER_ID = "billing_gql_customer_id"
METADATA_SUBSCRIPTION_ID = "billing_gql_subscription_id"
METADATA_REFUND_ID = "billing_gql_refund_id"
"""Our refund id, sent with a refund made through ``refundPayment`` (``RefundRequest.metadata``)
and read back from the provider's refund events (``RefundInfo.refund_id``)."""


class SubscriptionStatus(StrEnum):
    INCOMPLETE = "INCOMPLETE"
    TRIALING = "TRIALING"
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"
    PAUSED = "PAUSED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"


class BillingInterval(StrEnum):
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    YEAR = "YEAR"
    ONE_TIME = "ONE_TIME"


class ProrationBehavior(StrEnum):
    CREATE_PRORATIONS = "CREATE_PRORATIONS"
    NONE = "NONE"
    ALWAYS_INVOICE = "ALWAYS_INVOICE"


class ProviderCapability(StrEnum):
    """What a provider can do (docs/api.md#provider-capabilities): ``Provider.capabilities``
    in the schema. :meth:`Provider.capabilities` derives them; plugins never list them."""

    CHECKOUT = "checkout"
    HOSTED_CHECKOUT = "hosted_checkout"
    BANK_TRANSFER = "bank_transfer"
    RECURRING = "recurring"
    REFUND = "refund"
    CANCEL = "cancel"
    RESUME = "resume"
    PAUSE = "pause"
    CHANGE_PLAN = "change_plan"
    PORTAL = "portal"
    USAGE = "usage"
    RECONCILE = "reconcile"


class EventKind(StrEnum):
    """What a normalized :class:`BillingEvent` says happened."""

    CHECKOUT_COMPLETED = "checkout.completed"
    """The buyer paid (or started a trial) through a hosted checkout."""
    CHECKOUT_EXPIRED = "checkout.expired"
    CHECKOUT_FAILED = "checkout.failed"
    SUBSCRIPTION_UPDATED = "subscription.updated"
    """A full snapshot of a provider-managed subscription (created, renewed, canceled …)."""
    PAYMENT_SUCCEEDED = "payment.succeeded"
    """Money collected for a checkout or a subscription period."""
    PAYMENT_FAILED = "payment.failed"
    """A charge failed; the subscription goes PAST_DUE."""
    PAYMENT_RECEIVED = "payment.received"
    """Money pushed by the buyer (a bank transfer), to be matched by ``payment.reference``."""
    REFUND_SUCCEEDED = "refund.succeeded"
    """Money went back to the buyer: ``refund`` says which payment (and, best, which refund)."""
    REFUND_FAILED = "refund.failed"
    """A refund the provider had accepted failed or was canceled: nothing went back."""
    DISPUTE_UPDATED = "dispute.updated"
    """A chargeback on a payment was opened, changed or closed (won or lost)."""
    GRANT_UPDATED = "grant.updated"
    """A provider-side benefit was granted or revoked (mapped to features by a hook)."""
    INVOICE_UPDATED = "invoice.updated"
    """The provider's invoice (Stripe invoice, Polar order) as it stands now: mirrored."""


@dataclass(frozen=True)
class UsageChargeInfo:
    """One usage charge of a plan, as a provider that bills usage sees it (in the
    checkout's currency)."""

    meter_code: str
    meter_ref: str | None
    """The meter's reference at this provider: the event name (Stripe meter event
    ``event_name``, Polar event ``name``) its usage is forwarded under."""
    provider_ref: str | None
    """The charge's own reference at this provider (a Stripe metered price), if any."""


@dataclass(frozen=True)
class PlanInfo:
    """A plan as a provider sees it."""

    id: str
    code: str
    name: str
    interval: BillingInterval
    interval_count: int
    trial_days: int
    """In a checkout: the trial this checkout grants — the plan's, or 0 for a customer who
    had the plan's trial before (start none then, whatever the price's default)."""
    provider_ref: str | None
    """This provider's reference for the plan in the checkout's currency (price/product id)."""
    usage_charges: Sequence[UsageChargeInfo] = ()
    """The plan's usage charges in the checkout's currency (``checkout``/plan change: bill
    them; see ``Provider.usage_charge_refs``)."""


@dataclass(frozen=True)
class CustomerInfo:
    """A customer as a provider sees it."""

    id: str
    external_id: str
    email: str | None
    name: str | None
    country: str | None
    provider_customer_id: str | None = None
    """This provider's id for the customer, once a previous checkout or event taught us it."""


@dataclass(frozen=True)
class CheckoutRequest:
    """What ``Provider.create_checkout`` is asked to start."""

    checkout_id: str
    purpose: str
    """``new`` (a first purchase), ``renewal`` (paying the next period of a subscription) or
    ``invoice`` (a subscription's pending charges, e.g. a proration). Only providers that do not
    charge renewals themselves (``charges_renewals = False``) are asked for the last two."""
    customer: CustomerInfo
    plan: PlanInfo
    amount: Money
    """Price × quantity from our catalog: what the buyer owes."""
    quantity: int
    expires_at: datetime
    idempotency_key: str
    """Stable for this checkout: send it where the provider supports idempotent creation."""
    success_url: str | None = None
    cancel_url: str | None = None
    payment_reference: str | None = None
    """For bank transfers: the reference the core reserved from ``Provider.payment_reference``."""
    subscription_id: str | None = None
    """For renewals: the subscription being renewed."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Our ids, to be echoed back by the provider's webhooks (see ``METADATA_*``)."""


@dataclass(frozen=True)
class BankTransferInstructions:
    """How to pay a checkout by bank transfer."""

    bank_code: str
    account_number: str
    account_name: str | None
    reference: str
    amount: Money
    qr_code_url: str


@dataclass(frozen=True)
class CheckoutSession:
    """What a provider created for a :class:`CheckoutRequest`."""

    provider_checkout_id: str | None = None
    url: str | None = None
    """Hosted checkout page, when the provider hosts one."""
    bank_transfer: BankTransferInstructions | None = None
    expires_at: datetime | None = None
    """The provider's own expiry, when it differs from the request's."""
    provider_customer_id: str | None = None
    """The provider's customer id, when creating the checkout revealed it."""


@dataclass(frozen=True)
class WebhookRequest:
    """A delivery as it arrived, before anything is trusted."""

    headers: Mapping[str, str]
    """Header names lower-cased."""
    body: bytes
    """The raw body: signatures are computed over these exact bytes."""
    received_at: datetime
    """Wall-clock time of arrival (not the test clock): use it for timestamp tolerance."""
    client: str | None = None
    """The peer address of the connection (the ASGI ``client``), when known."""


@dataclass(frozen=True)
class WebhookEnvelope:
    """What a verified delivery is: returned by ``Provider.verify_webhook``."""

    event_id: str
    """The provider's id for the event, stable across its retries; the inbox dedupes on it."""
    event_type: str | None = None
    occurred_at: datetime | None = None
    keep_headers: Mapping[str, str] = field(default_factory=dict)
    """Headers ``parse_webhook`` will need later (stored with the body). Never credentials."""


@dataclass(frozen=True)
class StoredDelivery:
    """A delivery from the inbox, handed to ``Provider.parse_webhook`` (also on replays)."""

    provider: str
    event_id: str
    event_type: str | None
    body: bytes
    headers: Mapping[str, str]
    received_at: datetime
    occurred_at: datetime | None = None

    def json(self) -> Any:
        """The body decoded as JSON (raises ``ValueError`` when it is not)."""
        return json.loads(self.body)


@dataclass(frozen=True)
class SubscriptionSnapshot:
    """A provider-managed subscription's full state.

    Its **version** orders it against the states applied before: ``updated_at`` when the
    provider says when this state was true, else the carrying ``BillingEvent.occurred_at``.
    The core applies a snapshot only when its version is strictly newer than the newest one it
    applied for that subscription; when it is not (an older delivery, or a tie — Stripe's
    times have whole seconds) and the provider implements ``Provider.fetch_subscription``, the
    core re-fetches the current state and applies that instead.
    """

    provider_subscription_id: str
    status: SubscriptionStatus
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    trial_end: datetime | None = None
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    plan_ref: str | None = None
    """The provider's price/product id; the core maps it to a plan through provider refs."""
    quantity: int | None = None
    currency: str | None = None
    provider_customer_id: str | None = None
    checkout_id: str | None = None
    """Our checkout id, from the metadata the checkout carried."""
    customer_id: str | None = None
    """Our customer id, from metadata."""
    external_customer_id: str | None = None
    subscription_id: str | None = None
    """Our subscription id, from metadata (set when we created it at the provider)."""
    updated_at: datetime | None = None
    """The provider's time at which this state was true (an API answer's ``Date`` header —
    ``billing_gql.response_time(response)`` —, the object's own modification time …). Set it
    on what ``fetch_subscription`` and the subscription operations (cancel, resume, pause,
    change plan) return: without it such a state is applied but cannot order later
    deliveries (the provider's own deliveries about that change, older ones still in flight).
    A webhook's snapshot may leave it ``None``: the event's ``occurred_at`` is then its
    version."""


@dataclass(frozen=True)
class PaymentInfo:
    """Money the provider reports."""

    provider_ref: str
    """Unique id of this money movement at the provider (charge, order, bank reference)."""
    amount: Money
    status: str = "succeeded"
    """``succeeded`` or ``failed``."""
    checkout_id: str | None = None
    provider_checkout_id: str | None = None
    provider_subscription_id: str | None = None
    customer_id: str | None = None
    provider_customer_id: str | None = None
    reference: str | None = None
    """Bank transfers: the payment reference found in the memo (matched to a checkout)."""
    received_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    """Provider details worth keeping (bank, account, memo); never secrets."""
    flag: str | None = None
    """Why this money must not count (e.g. the provider's API does not confirm it): the core
    keeps it as a ``flagged`` payment for operators, never matched or added to a checkout."""


@dataclass(frozen=True)
class FeatureGrant:
    """A feature granted to a customer (by a plan or by a provider benefit)."""

    feature: str
    enabled: bool = True
    limit: Decimal | None = None
    """``None`` is unlimited."""


@dataclass(frozen=True)
class ProviderGrant:
    """A provider-side benefit granted to (or revoked from) a customer."""

    grant_id: str
    benefit_id: str
    benefit_type: str
    granted: bool
    """False once revoked."""
    customer_id: str | None = None
    provider_customer_id: str | None = None
    external_customer_id: str | None = None
    provider_subscription_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """The benefit's metadata, e.g. ``{"feature": "seats", "limit": 10}``."""
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BillingEvent:
    """One normalized fact parsed from a provider delivery (or from reconciliation)."""

    kind: EventKind
    occurred_at: datetime
    """The provider's time for the fact; older facts never overwrite newer state."""
    checkout_id: str | None = None
    provider_checkout_id: str | None = None
    """The provider's id for the checkout session this fact is about. A ``checkout.completed``
    must carry it: the core completes a checkout only when it is the id the provider answered
    ``create_checkout`` with (``CheckoutSession.provider_checkout_id``) — our ``checkout_id``
    in the payload is a hint anyone can attach to a session of their own."""
    customer_id: str | None = None
    provider_customer_id: str | None = None
    external_customer_id: str | None = None
    subscription: SubscriptionSnapshot | None = None
    payment: PaymentInfo | None = None
    refund: RefundInfo | None = None
    dispute: DisputeInfo | None = None
    grant: ProviderGrant | None = None
    invoice: ProviderInvoice | None = None
    amount: Money | None = None
    """``checkout.completed``: what the provider charged the buyer for the session, before
    tax when the provider adds tax on top (zero when nothing was due now, as with a trial).
    The core completes a checkout only when it covers what the checkout asks for in the
    checkout's currency; otherwise the completion is kept as an ``unmatched`` payment and the
    checkout stays open. ``None``: ``payment.amount`` counts (a paid completion must carry
    one or the other)."""


@dataclass(frozen=True)
class SubscriptionRef:
    """A subscription handed to a provider operation."""

    subscription_id: str
    provider_subscription_id: str | None
    customer: CustomerInfo
    plan: PlanInfo
    quantity: int
    currency: str
    current_period_end: datetime | None = None


@dataclass(frozen=True)
class PlanChangeRequest:
    subscription: SubscriptionRef
    new_plan: PlanInfo
    proration: ProrationBehavior


@dataclass(frozen=True)
class PortalRequest:
    customer: CustomerInfo
    return_url: str | None = None


@dataclass(frozen=True)
class UsageRecord:
    """One usage event to forward to a provider that bills it."""

    event_id: str
    """Our event id: send it as the provider's idempotency key (Polar ``external_id``…)."""
    meter_code: str
    provider_event_name: str
    """The meter's provider reference (the provider's event/meter name)."""
    customer: CustomerInfo
    timestamp: datetime
    value: Decimal
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UsageReportResult:
    accepted: int
    """Records the provider took (including its own duplicates)."""
    rejected: Mapping[str, str] = field(default_factory=dict)
    """Event id → reason, for records the provider refused for good (not retried)."""


@dataclass(frozen=True)
class ReconcileRequest:
    """What ``Provider.reconcile`` should look at."""

    subscriptions: Sequence[SubscriptionRef]
    """Subscriptions we hold at this provider and consider live."""
    cursor: Mapping[str, Any]
    """What the previous run returned as ``ReconcileResult.cursor`` (empty the first time)."""
    now: datetime


@dataclass(frozen=True)
class ReconcileResult:
    events: Sequence[BillingEvent]
    """Facts to apply; they go through the same idempotent path as webhooks."""
    cursor: Mapping[str, Any] = field(default_factory=dict)
    """Saved and handed back next time (e.g. the last transaction id seen)."""


@dataclass(frozen=True)
class DomainEvent:
    """A change inside billing-gql, sent to observer hooks and to the app's webhook endpoints.

    ``type`` is dotted (``checkout.completed``, ``subscription.updated``,
    ``usage.threshold_crossed`` …); ``data`` is JSON-ready (ids as strings, money as
    ``{"amount": "29.00", "currency": "USD"}``).
    """

    id: str
    type: str
    occurred_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
