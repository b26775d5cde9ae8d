"""Applying payment events: ``PAYMENT_SUCCEEDED``, ``PAYMENT_FAILED``, ``PAYMENT_RECEIVED`` (bank
transfers, matched or kept unmatched), ``DISPUTE_UPDATED`` (a lost dispute is recorded as a
refund), and assigning a payment; refunds are :mod:`billing_gql.applier.refunds`'s."""

from __future__ import annotations

import logging
from datetime import datetime
from uuid import UUID

from billing_gql.applier.base import (
    ApplyError,
    lock_checkout_row,
)
from billing_gql.applier.refresh import (
    version_of,
)
from billing_gql.applier.refunds import (
    RefundApplier,
    RefundFact,
    lock_payment,
    record_refund,
    refund_totals,
)
from billing_gql.core.checkout import Checkout, checkout_from_row
from billing_gql.core.events import dispute_event, payment_event, subscription_event
from billing_gql.core.payments import Payment, PaymentStatus, payment_from_row
from billing_gql.core.refunds import RefundStatus
from billing_gql.core.subscriptions import Subscription, subscription_from_row
from billing_gql.money import shown
from billing_gql.plugins.types import (
    BillingEvent,
    DisputeInfo,
)
from billing_gql.store.payments_sql import mark_payment_assigned, set_payment_disputed
from billing_gql.store.subscriptions_sql import set_subscription_status

log = logging.getLogger("billing_gql.applier.engine")

_DISPUTE_STATUS = {
    "open": PaymentStatus.DISPUTED,
    "won": PaymentStatus.DISPUTE_WON,
    "lost": PaymentStatus.DISPUTE_LOST,
}
_CLOSED = (PaymentStatus.DISPUTE_WON, PaymentStatus.DISPUTE_LOST)


class PaymentApplier(RefundApplier):
    async def payment_succeeded(self, ev: BillingEvent) -> None:
        info = ev.payment
        if info is None:
            raise ApplyError("payment.succeeded without payment details")
        checkout = await self.lock_checkout(
            info.checkout_id or ev.checkout_id, info.provider_checkout_id or ev.provider_checkout_id
        )
        psid = info.provider_subscription_id or (
            ev.subscription.provider_subscription_id if ev.subscription else None
        )
        sub = await self.lock_subscription(
            provider_subscription_id=psid,
            subscription_id=checkout.subscription_id if checkout else None,
        )
        customer_id = (
            (checkout.customer_id if checkout else None)
            or (sub.customer_id if sub else None)
            or await self.resolve_customer(
                info.customer_id or ev.customer_id,
                ev.external_customer_id,
                info.provider_customer_id or ev.provider_customer_id,
            )
        )
        # Money for another provider session than the checkout's (when the payment says
        # which) is not the checkout's, whatever checkout id its metadata names.
        session = info.provider_checkout_id or ev.provider_checkout_id
        matched = (
            checkout is not None
            and checkout.currency == info.amount.currency
            and (session is None or self.binds(checkout, session))
        )
        payment = await self.insert_payment(
            info,
            ev.occurred_at,
            status="succeeded",
            checkout=checkout if matched else None,
            customer_id=customer_id,
            subscription_id=sub.id if sub else None,
        )
        if payment is not None:
            await self.learn_customer(
                customer_id, info.provider_customer_id or ev.provider_customer_id
            )
            self.out.append(payment_event("payment.succeeded", payment, self.now))
            if matched and checkout is not None:
                await self.take_payment(checkout, payment)
            if (
                sub is not None
                and ev.subscription is None
                and sub.status == "PAST_DUE"
                and not self.stale_hint(sub, ev.occurred_at)
            ):
                await self.set_status(sub, "ACTIVE", ev.occurred_at)
        if ev.subscription is not None:
            await self.apply_snapshot(
                ev.subscription, version_of(ev.subscription, ev.occurred_at), event=ev
            )

    async def payment_failed(self, ev: BillingEvent) -> None:
        info = ev.payment
        checkout = await self.lock_checkout(
            (info.checkout_id if info else None) or ev.checkout_id,
            (info.provider_checkout_id if info else None) or ev.provider_checkout_id,
        )
        psid = (info.provider_subscription_id if info else None) or (
            ev.subscription.provider_subscription_id if ev.subscription else None
        )
        sub = await self.lock_subscription(
            provider_subscription_id=psid,
            subscription_id=checkout.subscription_id if checkout else None,
        )
        if info is not None and info.provider_ref:
            payment = await self.insert_payment(
                info,
                ev.occurred_at,
                status="failed",
                checkout=checkout,
                customer_id=(checkout.customer_id if checkout else None)
                or (sub.customer_id if sub else None),
                subscription_id=sub.id if sub else None,
            )
            if payment is not None:
                self.out.append(payment_event("payment.failed", payment, self.now))
        if ev.subscription is not None:
            await self.apply_snapshot(
                ev.subscription, version_of(ev.subscription, ev.occurred_at), event=ev
            )
        elif sub is not None and sub.status in ("ACTIVE", "TRIALING"):
            if self.stale_hint(sub, ev.occurred_at):
                log.info("payment.failed older than %s's last snapshot: ignored", sub.id)
            else:
                await self.set_status(sub, "PAST_DUE", ev.occurred_at)

    def stale_hint(self, sub: Subscription, occurred_at: datetime) -> bool:
        """The ordering check for a status inferred from a payment event without a snapshot
        (failed → PAST_DUE, recovered → ACTIVE): stale when older than the state applied. It
        carries no state to re-fetch against, so a tie counts as new."""
        return sub.provider_updated_at is not None and occurred_at < sub.provider_updated_at

    async def set_status(
        self, sub: Subscription, status: str, version: datetime | None = None
    ) -> Subscription:
        """Set ``sub``'s status; ``version``: the provider's time of the fact (advances the
        subscription's version, so older snapshots no longer undo it)."""
        row = await set_subscription_status(self.conn, sub.id, status, self.now, version)
        updated = subscription_from_row(row)
        self.out.append(subscription_event("subscription.updated", updated, self.now))
        return updated

    async def payment_received(self, ev: BillingEvent) -> None:
        """A bank transfer: match its reference (case-insensitive) to one of our checkouts."""
        info = ev.payment
        if info is None:
            raise ApplyError("payment.received without payment details")
        if info.flag is not None:
            await self.flag_payment(info, ev.occurred_at, info.flag)
            return
        checkout: Checkout | None = None
        if info.reference:
            row = await lock_checkout_row(
                self.conn,
                "provider = $1 AND payment_reference IS NOT NULL "
                "AND upper(payment_reference) = upper($2)",
                self.provider,
                info.reference.strip(),
            )
            checkout = checkout_from_row(row) if row else None
        if checkout is None and (info.checkout_id or ev.checkout_id):
            checkout = await self.lock_checkout(info.checkout_id or ev.checkout_id, None)
        matched = checkout is not None and checkout.currency == info.amount.currency
        payment = await self.insert_payment(
            info,
            ev.occurred_at,
            status="succeeded" if matched else "unmatched",
            checkout=checkout if matched else None,
            customer_id=checkout.customer_id if matched and checkout else None,
            subscription_id=checkout.subscription_id if matched and checkout else None,
        )
        if payment is None:
            # Counted already — unless the reference came with another amount: kept flagged.
            reason = await self.conflict(info)
            if reason is not None:
                await self.flag_payment(info, ev.occurred_at, reason)
            return
        if matched and checkout is not None:
            self.out.append(payment_event("payment.succeeded", payment, self.now))
            await self.take_payment(checkout, payment)
        else:
            log.info(
                "%s transfer %s matched no checkout: kept unmatched",
                self.provider,
                info.provider_ref,
            )
            self.out.append(payment_event("payment.unmatched", payment, self.now))

    async def assign(self, payment_id: UUID, checkout: Checkout) -> Payment:
        """An admin applies an unmatched payment to ``checkout`` (locked) as if it had matched."""
        row = await mark_payment_assigned(
            self.conn,
            payment_id,
            checkout_id=checkout.id,
            customer_id=checkout.customer_id,
            subscription_id=checkout.subscription_id,
        )
        payment = payment_from_row(row)
        self.out.append(payment_event("payment.succeeded", payment, self.now))
        await self.take_payment(checkout, payment)
        return payment

    async def dispute_updated(self, ev: BillingEvent) -> None:
        """A chargeback opened (``disputed``) or closed (``dispute_won``/``dispute_lost``).

        A closed dispute is final: a late or repeated delivery changes nothing. A lost one is
        recorded once as a refund of what was left (through :func:`record_refund`, with the
        provider refund id ``dispute:<dispute id>``): it shows in the payment's refunds, adds
        to the payment's and its checkout's refunded totals and emits ``payment.refunded``
        too, so a ONE_TIME purchase ends as with a full refund.
        """
        dispute = ev.dispute
        if dispute is None:
            raise ApplyError("dispute.updated without dispute details")
        status = _DISPUTE_STATUS.get(dispute.status)
        if status is None:
            raise ApplyError(f"unknown dispute status {shown(dispute.status)}")
        payment = await lock_payment(
            self.conn, provider=self.provider, provider_ref=dispute.payment_provider_ref
        )
        if payment is None:
            raise ApplyError(
                f"dispute of an unknown {self.provider} payment {dispute.payment_provider_ref}"
            )
        if payment.status in _CLOSED or payment.status == status:
            return
        if payment.status in (PaymentStatus.FAILED, PaymentStatus.FLAGGED):
            log.warning("dispute of %s payment %s: ignored", payment.status, payment.id)
            return
        details = {**(payment.details or {}), "dispute": _dispute_details(dispute)}
        row = await set_payment_disputed(self.conn, payment.id, status=status, details=details)
        payment = payment_from_row(row)
        if status == PaymentStatus.DISPUTE_LOST:
            done, _ = await refund_totals(self.conn, payment)
            left = payment.amount_minor - done
            if left > 0:
                fact = RefundFact(
                    status=RefundStatus.SUCCEEDED,
                    amount_minor=left,
                    provider_refund_id=f"dispute:{dispute.provider_dispute_id}",
                    reason="dispute lost" + (f": {dispute.reason}" if dispute.reason else ""),
                )
                _, payment, events = await record_refund(
                    self.conn, payment, fact, self.now, invoice_prefix=self.invoice_prefix
                )
                self.out += events
        self.out.append(dispute_event(payment, self.now))


def _dispute_details(dispute: DisputeInfo) -> dict[str, object]:
    """What a payment keeps of its dispute (``details['dispute']``)."""
    amount = dispute.amount
    return {
        "id": dispute.provider_dispute_id,
        "status": dispute.status,
        "reason": dispute.reason,
        "amount": {"amount": amount.amount, "currency": amount.currency} if amount else None,
    }
