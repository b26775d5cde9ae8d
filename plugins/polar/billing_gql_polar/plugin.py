"""The plugin glue: the ``polar`` provider registered with billing-gql.

Registered through the ``billing_gql`` entry-point group (``polar = "billing_gql_polar.plugin"``).
Settings: ``BILLING_GQL_POLAR_ACCESS_TOKEN`` (an organization access token) and
``BILLING_GQL_POLAR_WEBHOOK_SECRET`` (the endpoint's ``whsec_…`` secret) are required;
``BILLING_GQL_POLAR_API_BASE`` defaults to ``https://api.polar.sh`` (the sandbox is
``https://sandbox-api.polar.sh``). HTTP calls live in :mod:`billing_gql_polar.api`, the
signature check and event mapping in :mod:`billing_gql_polar.webhooks`.

How billing-gql objects meet Polar's:

- a plan's ``polar`` provider reference is a Polar **product id**; a meter's is the Polar event
  ``name`` its usage is ingested under;
- our customer's ``externalId`` is the Polar customer's ``external_id`` (Polar creates the
  customer at the first checkout);
- our checkout and customer ids travel in the checkout's ``metadata``, which Polar copies onto
  the order and the subscription, so every delivery finds its way back.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from billing_gql import (
    BillingEvent,
    BillingInterval,
    CheckoutRequest,
    CheckoutSession,
    EventKind,
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
    WebhookRequest,
    hookimpl,
    our_metadata,
    provider_subscription_id,
)
from billing_gql_polar.api import DEFAULT_API_BASE, PolarApi, PolarError, PolarValidationError
from billing_gql_polar.mapping import (
    grant_from_state,
    object_id,
    parse_time,
    state_time,
    subscription_snapshot,
)
from billing_gql_polar.metered import check_metered_prices
from billing_gql_polar.refunds import make_refund
from billing_gql_polar.webhooks import EventParser, read_envelope

__all__ = ["PRORATION", "PolarProvider", "register_providers", "usage_metadata"]

PRORATION: Mapping[ProrationBehavior, str] = {
    ProrationBehavior.CREATE_PRORATIONS: "prorate",
    ProrationBehavior.ALWAYS_INVOICE: "invoice",
    ProrationBehavior.NONE: "next_period",
}
"""Our proration behaviours as Polar's ``proration_behavior``."""

_MAX_TRIAL_DAYS = 1000  # Polar's trial_interval_count maximum
_INGEST_BATCH = 1000
_METADATA_KEY_MAX = 40
_METADATA_VALUE_MAX = 500
_METADATA_PAIRS_MAX = 50


def _metadata_value(value: object) -> str | int | float | bool | None:
    """``value`` as Polar metadata accepts it (str ≤ 500, int, float, bool), else ``None``."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, str) and 0 < len(value) <= _METADATA_VALUE_MAX:
        return value
    return None


def usage_metadata(record: UsageRecord) -> dict[str, str | int | float | bool]:
    """The Polar event ``metadata`` of a usage record: its properties (scalars Polar accepts)
    and its ``value``, which a Polar meter aggregates as ``metadata.value`` (or any property)."""
    out: dict[str, str | int | float | bool] = {}
    for key, raw in record.properties.items():
        value = _metadata_value(raw)
        if value is not None and 0 < len(key) <= _METADATA_KEY_MAX and not key.startswith("_"):
            out[key] = value
        if len(out) >= _METADATA_PAIRS_MAX - 1:
            break
    value = _metadata_value(record.value)
    if value is not None:
        out["value"] = value
    return out


class PolarProvider(Provider):
    """Hosted Polar checkout, subscriptions renewed by Polar, Standard Webhooks deliveries."""

    name = "polar"
    display_name = "Polar"
    required_settings = ("ACCESS_TOKEN", "WEBHOOK_SECRET")
    optional_settings = {"API_BASE": DEFAULT_API_BASE}
    secret_settings = ("ACCESS_TOKEN", "WEBHOOK_SECRET")
    currencies = None  # the Polar product's prices decide; a plan needs a ref per currency
    needs_provider_ref = True
    charges_renewals = True
    hosted_checkout = True
    refunds = True

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.api = LazyClient(self._build_api)
        """The Polar client (built on first use, closed by :meth:`aclose`)."""
        self.events = EventParser(self.log, self.api)

    def _build_api(self) -> PolarApi:
        base = self.settings.get("API_BASE") or DEFAULT_API_BASE
        token = self.settings["ACCESS_TOKEN"]
        return PolarApi(self.context.http, access_token=token, api_base=base, logger=self.log)

    async def aclose(self) -> None:
        await self.api.aclose()

    # -- checkout ------------------------------------------------------------------------------

    def checkout_body(self, request: CheckoutRequest) -> dict[str, Any]:
        """The ``POST /v1/checkouts/`` body (``CheckoutProductsCreate``) for ``request``."""
        product = request.plan.provider_ref
        if not product:
            raise UserInputError(
                "PROVIDER_REF_MISSING",
                f"plan {request.plan.code!r} has no Polar product for {request.amount.currency}",
                ["planCode"],
            )
        body: dict[str, Any] = {
            "products": [product],
            "external_customer_id": request.customer.external_id,
            "currency": request.amount.currency.lower(),
            "metadata": our_metadata(request),
        }
        if request.customer.email:
            body["customer_email"] = request.customer.email
        if request.customer.name:
            body["customer_name"] = request.customer.name
        if request.success_url:
            body["success_url"] = request.success_url
        if request.cancel_url:
            body["return_url"] = request.cancel_url  # Polar's "back" link on its page
        # Our catalog decides the price: a Polar discount code would pay less than the checkout
        # asks, and such a completion is kept unmatched (docs/plugins.md "A completion must be
        # ours"), so the buyer is not offered one.
        body["allow_discount_codes"] = False
        if request.quantity > 1:
            body["seats"] = request.quantity  # seat-based products only; Polar says otherwise
        if request.plan.interval != BillingInterval.ONE_TIME:
            # Our catalog decides the trial, not the product's default.
            if request.plan.trial_days > 0:
                if request.plan.trial_days > _MAX_TRIAL_DAYS:
                    raise UserInputError(
                        "INVALID_INPUT",
                        f"Polar trials last at most {_MAX_TRIAL_DAYS} days",
                        ["planCode"],
                    )
                body["trial_interval"] = "day"
                body["trial_interval_count"] = request.plan.trial_days
            else:
                body["allow_trial"] = False
        return body

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """A Polar checkout session for the plan's product; the buyer pays on its ``url``."""
        if request.purpose != "new":
            raise NotSupported("Polar renews subscriptions itself; no renewal checkout")
        body = self.checkout_body(request)
        await check_metered_prices(self.api(), request, self.log)
        checkout = await self.api().create_checkout(body)
        checkout_id = object_id(checkout.get("id"))
        url = object_id(checkout.get("url"))
        if checkout_id is None or url is None:
            raise ProviderError("Polar: the checkout has no id or url")
        expires_at = parse_time(checkout.get("expires_at"))
        return CheckoutSession(
            provider_checkout_id=checkout_id,
            url=url,
            # Polar's page closes on its own schedule; report it when it comes first.
            expires_at=expires_at if expires_at and expires_at < request.expires_at else None,
            provider_customer_id=object_id(checkout.get("customer_id")),
        )

    # -- webhooks ------------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        return read_envelope(request, self.settings["WEBHOOK_SECRET"])

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        return await self.events.parse(delivery)

    # -- subscriptions -------------------------------------------------------------------------

    @staticmethod
    def _polar_id(ref: SubscriptionRef) -> str:
        return provider_subscription_id(ref, "the subscription is not known to Polar yet")

    async def fetch_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        """``GET /v1/subscriptions/{id}`` as a snapshot dated by Polar (its ``modified_at``, or
        the answer's ``Date`` when later); ``None``: Polar has none."""
        if not ref.provider_subscription_id:
            return None
        sub, read_at = await self.api().get_subscription_at(ref.provider_subscription_id)
        if sub is None or read_at is None:
            return None
        return subscription_snapshot(sub, read_at=read_at)

    # Each operation answers the subscription as Polar left it, dated by Polar's clock
    # (``modified_at``, or the answer's ``Date``), so that Polar's own deliveries about the
    # change — and older ones still in flight — are ordered against it.

    async def _unless_it_holds(
        self,
        sub_id: str,
        change: Awaitable[tuple[dict[str, Any], datetime]],
        holds: Callable[[Mapping[str, Any]], bool],
    ) -> tuple[dict[str, Any], datetime]:
        """Polar's answer to ``change``; when Polar refuses it as already done, the current
        subscription, provided the wished state ``holds`` there.

        Polar does not repeat a cancel or an uncancel as a no-op: a second cancel is a 403
        ``AlreadyCanceledSubscription`` and an uncancel with nothing pending a 400
        ``BadRequest``. That is what answers the core client's retry of one that took effect
        but whose answer was lost to a 5xx, and a request for what the customer already did
        in Polar's portal (its delivery still on the way). Neither is a failure.
        """
        try:
            return await change
        except PolarError as exc:
            if exc.error not in ("AlreadyCanceledSubscription", "BadRequest"):
                raise
            current, read_at = await self.api().get_subscription_at(sub_id)
            if current is None or read_at is None or not holds(current):
                raise exc from None
            self.log.info("polar subscription %s was already so (%s)", sub_id, exc.error)
            return current, read_at

    async def cancel_subscription(
        self, ref: SubscriptionRef, *, at_period_end: bool
    ) -> SubscriptionSnapshot | None:
        """At period end: ``PATCH {"cancel_at_period_end": true}``; now: ``DELETE`` (revoke).
        Either is answered by Polar's state when it was already so (see
        :meth:`_unless_it_holds`)."""
        sub_id = self._polar_id(ref)
        api = self.api()
        if at_period_end:
            # Safe to retry after a 5xx: a repeat that Polar refuses is recognized below.
            sub, at = await self._unless_it_holds(
                sub_id,
                api.update_subscription_at(sub_id, {"cancel_at_period_end": True}, idempotent=True),
                lambda s: bool(s.get("cancel_at_period_end")) and not s.get("ended_at"),
            )
            return subscription_snapshot(sub, read_at=at)
        sub, at = await self._unless_it_holds(
            sub_id, api.revoke_subscription_at(sub_id), lambda s: bool(s.get("ended_at"))
        )
        return subscription_snapshot(sub, revoked=True, read_at=at)

    async def resume_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        """Undo a pending cancel (``{"cancel_at_period_end": false}``) or resume a paused
        subscription (``{"resume": true}``), whichever Polar's current state calls for."""
        sub_id = self._polar_id(ref)
        api = self.api()
        current, at = await api.get_subscription_at(sub_id)
        if current is None or at is None:
            raise UserInputError("INVALID_STATE", "Polar no longer has this subscription")
        if current.get("status") == "paused":
            current, at = await api.update_subscription_at(sub_id, {"resume": True})
        elif current.get("cancel_at_period_end"):
            current, at = await self._unless_it_holds(
                sub_id,
                api.update_subscription_at(
                    sub_id, {"cancel_at_period_end": False}, idempotent=True
                ),
                lambda s: not s.get("cancel_at_period_end") and not s.get("ended_at"),
            )
        else:
            self.log.info("polar subscription %s has nothing to resume", sub_id)
        return subscription_snapshot(current, read_at=at)

    async def change_subscription_plan(
        self, request: PlanChangeRequest
    ) -> SubscriptionSnapshot | None:
        """``PATCH {"product_id", "proration_behavior"}``; with ``next_period`` Polar keeps
        the old product until the period ends (the core records the pending change)."""
        sub_id = self._polar_id(request.subscription)
        product = request.new_plan.provider_ref
        if not product:
            raise UserInputError(
                "PROVIDER_REF_MISSING",
                f"plan {request.new_plan.code!r} has no Polar product",
                ["planCode"],
            )
        sub, at = await self.api().update_subscription_at(
            sub_id, {"product_id": product, "proration_behavior": PRORATION[request.proration]}
        )
        return subscription_snapshot(sub, read_at=at)

    # -- portal, usage, reconciliation ---------------------------------------------------------

    async def create_portal_session(self, request: PortalRequest) -> str:
        """A customer session's ``customer_portal_url`` (Polar's customer portal)."""
        body: dict[str, Any] = {"external_customer_id": request.customer.external_id}
        if request.return_url:
            body["return_url"] = request.return_url
        session = await self.api().create_customer_session(body)
        url = object_id(session.get("customer_portal_url"))
        if url is None:
            raise ProviderError("Polar: the customer session has no customer_portal_url")
        return url

    async def refund_payment(self, request: RefundRequest) -> RefundResult:
        """``POST /v1/refunds/`` for the order the payment was (see
        :mod:`billing_gql_polar.refunds`: idempotent on our refund id, tax handled)."""
        return await make_refund(self.api(), request)

    async def report_usage(self, records: Sequence[UsageRecord]) -> UsageReportResult:
        """Ingest each record as a Polar event: ``name`` = the meter's Polar reference,
        ``external_id`` = our event id (Polar inserts each ``external_id`` once and counts the
        rest as duplicates), ``external_customer_id`` = our customer's externalId."""
        accepted = 0
        rejected: dict[str, str] = {}
        api = self.api()
        for start in range(0, len(records), _INGEST_BATCH):
            batch = list(records[start : start + _INGEST_BATCH])
            events = [self._usage_event(r) for r in batch]
            try:
                result = await api.ingest_events(events)
            except PolarValidationError as exc:
                # Events Polar names as invalid are refused for good; the rest go again.
                bad = {
                    e.loc[2]: e.msg
                    for e in exc.errors
                    if len(e.loc) > 2
                    and e.loc[:2] == ("body", "events")
                    and isinstance(e.loc[2], int)
                    and 0 <= e.loc[2] < len(batch)
                }
                if not bad:
                    raise
                for index, message in bad.items():
                    rejected[batch[index].event_id] = f"Polar: {message}"
                keep = [e for i, e in enumerate(events) if i not in bad]
                result = await api.ingest_events(keep) if keep else {"inserted": 0}
            accepted += _count(result, "inserted") + _count(result, "duplicates")
        return UsageReportResult(accepted=accepted, rejected=rejected)

    @staticmethod
    def _usage_event(record: UsageRecord) -> dict[str, Any]:
        return {
            "name": record.provider_event_name,
            "external_customer_id": record.customer.external_id,
            "external_id": record.event_id,
            "timestamp": record.timestamp.isoformat(),
            "metadata": usage_metadata(record),
        }

    async def reconcile(self, request: ReconcileRequest) -> ReconcileResult:
        """Re-read each subscription (``GET /v1/subscriptions/{id}``) and each customer's
        granted benefits (``GET /v1/customers/external/{id}/state``). Each fact is dated by
        Polar's clock when it was read, so it wins over any older delivery but not a newer
        one."""
        api = self.api()
        events: list[BillingEvent] = []
        customers: dict[str, str] = {}
        for ref in request.subscriptions:
            customers.setdefault(ref.customer.external_id, ref.customer.id)
            if not ref.provider_subscription_id:
                continue
            sub, read_at = await api.get_subscription_at(ref.provider_subscription_id)
            if sub is None or read_at is None:
                self.log.warning(
                    "reconcile: Polar has no subscription %s (ours %s)",
                    ref.provider_subscription_id,
                    ref.subscription_id,
                )
                continue
            snapshot = subscription_snapshot(sub, read_at=read_at)
            events.append(
                BillingEvent(
                    EventKind.SUBSCRIPTION_UPDATED,
                    state_time(sub, read_at),
                    customer_id=snapshot.customer_id or ref.customer.id,
                    provider_customer_id=snapshot.provider_customer_id,
                    external_customer_id=snapshot.external_customer_id,
                    subscription=snapshot,
                )
            )
        for external_id, customer_id in customers.items():
            events += await self._granted_benefits(api, external_id, customer_id)
        return ReconcileResult(events=events)

    async def _granted_benefits(
        self, api: PolarApi, external_id: str, customer_id: str
    ) -> list[BillingEvent]:
        state, read_at = await api.customer_state_at(external_id)
        if state is None or read_at is None:
            return []
        granted = state.get("granted_benefits")
        provider_customer_id = object_id(state.get("id"))
        return [
            BillingEvent(
                EventKind.GRANT_UPDATED,
                state_time(g, read_at),
                customer_id=customer_id,
                provider_customer_id=provider_customer_id,
                external_customer_id=external_id,
                grant=grant_from_state(
                    g,
                    provider_customer_id=provider_customer_id,
                    external_customer_id=external_id,
                ),
            )
            for g in (granted if isinstance(granted, list) else [])
            if isinstance(g, Mapping) and isinstance(g.get("id"), str)
        ]


def _count(result: Mapping[str, Any], key: str) -> int:
    value = result.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@hookimpl
def register_providers() -> Sequence[type[Provider]]:
    """The Polar provider."""
    return [PolarProvider]
