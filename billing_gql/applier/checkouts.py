"""Applying checkout events: ``CHECKOUT_COMPLETED`` (bound to the stored session, paying what it
owes), ``CHECKOUT_EXPIRED`` and ``CHECKOUT_FAILED``, and taking a payment into a checkout."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from billing_gql.applier.base import (
    AlreadySubscribed,
    ApplyError,
)
from billing_gql.applier.refresh import (
    version_of,
)
from billing_gql.applier.subscriptions import SubscriptionApplier
from billing_gql.core import checkout as cm
from billing_gql.core.checkout import Checkout, checkout_from_row
from billing_gql.core.events import checkout_event, payment_event
from billing_gql.core.payments import Payment
from billing_gql.money import Money
from billing_gql.plugins.types import (
    BillingEvent,
    EventKind,
    PaymentInfo,
    SubscriptionSnapshot,
)
from billing_gql.store.checkouts_sql import (
    mark_checkout_completed,
    set_checkout_amount,
    set_checkout_status,
    set_provider_checkout_id,
)
from billing_gql.store.customers_sql import default_customer_currency
from billing_gql.store.invoice_items_sql import bill_items_by_checkout, carry_credit

log = logging.getLogger("billing_gql.applier.engine")


class CheckoutApplier(SubscriptionApplier):
    async def take_payment(self, checkout: Checkout, payment: Payment) -> None:
        """Money matched to ``checkout``: add it, and complete the checkout once paid in full
        (also an EXPIRED or FAILED one: the money arrived). Overpayments are kept as paid."""
        checkout = await self.add_paid(checkout, payment.amount_minor)
        if checkout.status != cm.COMPLETED and checkout.amount_paid_minor >= checkout.amount_minor:
            await self.complete(checkout, None, None)
        else:
            self.out.append(checkout_event("checkout.updated", checkout, self.now))

    # -- checkouts ------------------------------------------------------------------------------

    async def checkout_completed(self, ev: BillingEvent) -> None:
        checkout = await self.lock_checkout(ev.checkout_id, ev.provider_checkout_id)
        if checkout is None and ev.subscription is not None:
            checkout = await self.lock_checkout(ev.subscription.checkout_id, None)
        if checkout is None:
            raise ApplyError(
                f"checkout.completed names no known {self.provider} checkout "
                f"({ev.checkout_id or ev.provider_checkout_id})"
            )
        reason = await self.completion_mismatch(checkout, ev)
        if reason is not None:
            await self.keep_mismatched(checkout, ev, reason)
            return
        pcid = (
            ev.provider_customer_id
            or (ev.subscription.provider_customer_id if ev.subscription else None)
            or (ev.payment.provider_customer_id if ev.payment else None)
        )
        await self.learn_customer(checkout.customer_id, pcid)
        if ev.provider_checkout_id and checkout.provider_checkout_id is None:
            await set_provider_checkout_id(self.conn, checkout.id, ev.provider_checkout_id)
        if ev.payment is not None:
            payment = await self.insert_payment(
                ev.payment,
                ev.occurred_at,
                status="succeeded",
                checkout=checkout,
                customer_id=checkout.customer_id,
                subscription_id=checkout.subscription_id,
            )
            if payment is not None:
                self.out.append(payment_event("payment.succeeded", payment, self.now))
                checkout = await self.add_paid(checkout, payment.amount_minor)
        snapshot = ev.subscription
        version = version_of(snapshot, ev.occurred_at) if snapshot is not None else None
        await self.complete(checkout, snapshot, version)

    # The reasons a completion does not complete the checkout it names
    # (``Payment.unmatchedReason``, ``payment.unmatched`` events).
    OTHER_PROVIDER_CHECKOUT = "PROVIDER_CHECKOUT_MISMATCH"
    OTHER_CURRENCY = "CURRENCY_MISMATCH"
    AMOUNT_MISSING = "AMOUNT_MISSING"
    AMOUNT_TOO_LOW = "AMOUNT_TOO_LOW"

    def binds(self, checkout: Checkout, provider_checkout_id: str | None) -> bool:
        """Whether a fact about the provider session ``provider_checkout_id`` is about the
        session we created for ``checkout``. Our ``checkout_id`` in a payload is only a hint
        (a buyer can attach it to a session of their own, e.g. Stripe's
        ``client_reference_id`` on a Payment Link); the id the provider answered
        ``create_checkout`` with is not. A checkout that has none (a provider that gives no
        id) binds on the amount alone."""
        stored = checkout.provider_checkout_id
        return stored is None or provider_checkout_id == stored

    def owed_at_completion(self, checkout: Checkout) -> int:
        """Minor units a completion must cover: the checkout's whole amount (what its provider
        session was created for; money counted already does not lower it, as it may be this
        very payment, delivered apart first), or nothing for a first purchase that starts a
        trial (its renewal, or the provider's first invoice after the trial, collects the
        price). The trial is the checkout's own (``Checkout.trial_days``: 0 for a customer who
        had the plan's trial before), not the plan's."""
        return 0 if checkout.starts_trial else checkout.amount_minor

    async def completion_mismatch(self, checkout: Checkout, ev: BillingEvent) -> str | None:
        """Why ``ev`` cannot complete ``checkout`` (``None``: it can). It must be about the
        provider session we stored (:meth:`binds`), and what the provider charged
        (``ev.amount``, else ``ev.payment.amount``) must be in the checkout's currency and
        cover what is owed (:meth:`owed_at_completion`; more is fine: tax on top)."""
        if not self.binds(checkout, ev.provider_checkout_id):
            return self.OTHER_PROVIDER_CHECKOUT
        paid = ev.amount if ev.amount is not None else (ev.payment.amount if ev.payment else None)
        if paid is not None and paid.currency != checkout.currency:
            return self.OTHER_CURRENCY
        owed = self.owed_at_completion(checkout)
        if owed > 0 and paid is None:
            return self.AMOUNT_MISSING
        if paid is not None and paid.minor < owed:
            return self.AMOUNT_TOO_LOW
        return None

    async def keep_mismatched(self, checkout: Checkout, ev: BillingEvent, reason: str) -> None:
        """A completion that names ``checkout`` but does not match it: nothing of it applies
        (no completion, no subscription, no customer learnt); its money is kept as an
        ``unmatched`` payment for an operator (``unmatchedPayments``, ``assignPayment``),
        announced by ``payment.unmatched``, and the checkout stays as it was."""
        info = ev.payment
        if info is None:
            # A completion without a payment of its own (the money, if any, comes in another
            # event): kept under the session's id, or once per checkout when it gives none.
            info = PaymentInfo(
                provider_ref=ev.provider_checkout_id or f"completion-of-{checkout.id}",
                amount=ev.amount or Money(0, checkout.currency),
                provider_checkout_id=ev.provider_checkout_id,
                provider_customer_id=ev.provider_customer_id,
                received_at=ev.occurred_at,
            )
        details = {
            **info.details,
            "unmatched_reason": reason,
            "claimed_checkout_id": str(checkout.id),
            "provider_checkout_id": ev.provider_checkout_id,
        }
        log.warning(
            "%s completion of checkout %s (session %s, %s) does not match it (%s): kept as an "
            "unmatched payment; the checkout stays %s",
            self.provider,
            checkout.id,
            ev.provider_checkout_id,
            ev.amount or info.amount,
            reason,
            checkout.status,
        )
        payment = await self.insert_payment(
            replace(info, details=details),
            ev.occurred_at,
            status="unmatched",
            checkout=None,
            customer_id=None,
            subscription_id=None,
        )
        if payment is not None:
            self.out.append(payment_event("payment.unmatched", payment, self.now))

    async def complete(
        self,
        checkout: Checkout,
        snapshot: SubscriptionSnapshot | None,
        version: datetime | None,
    ) -> Checkout:
        """Complete ``checkout`` (locked): create, renew or settle its subscription.
        ``version`` orders ``snapshot`` (see :meth:`admits`)."""
        if checkout.status == cm.COMPLETED:
            if snapshot is not None:
                await self.apply_snapshot(snapshot, version, checkout=checkout)
            return checkout
        sub_id = checkout.subscription_id
        if checkout.purpose == cm.CheckoutPurpose.NEW:
            plan = await self.plan(checkout.plan_id)
            if plan.interval != "ONE_TIME":
                try:
                    sub = await self.subscription_for(checkout, plan, snapshot, version)
                except AlreadySubscribed as exc:
                    await self.already_subscribed(checkout, exc.existing)
                    sub = exc.existing
                sub_id = sub.id
        elif checkout.purpose == cm.CheckoutPurpose.RENEWAL and sub_id is not None:
            await self.renew(sub_id, checkout)
        if checkout.purpose != cm.CheckoutPurpose.NEW and sub_id is not None:
            await self.settle_items(checkout, sub_id)
        row = await mark_checkout_completed(self.conn, checkout.id, sub_id, self.now)
        await default_customer_currency(self.conn, checkout.customer_id, checkout.currency)
        done = checkout_from_row(row)
        self.out.append(checkout_event("checkout.completed", done, self.now))
        await self.invoice_checkout_paid(done)
        return done

    async def settle_items(self, checkout: Checkout, subscription_id: UUID) -> None:
        """The invoice items ``checkout`` carried are billed by it, and by no other checkout.

        An expired (or failed) push checkout releases its items to the next one; money may
        still complete it (a late bank transfer). Then each item it carried:

        - still pending and held by it, or by another checkout that is not open: billed here;
        - moved to a newer OPEN checkout: billed here, and that checkout's amount drops by it
          (same reference: the bank transfer asks for what remains; at or below what it has
          received, it completes; below zero, the rest is a credit carried forward);
        - already billed by another completed checkout: the customer paid it twice, so its
          amount comes back as a pending credit for the next push checkout.
        """

        cid = checkout.id
        holders = await self.conn.fetch(
            "SELECT * FROM checkouts WHERE status = 'OPEN' AND id <> $1 AND id IN ("
            "SELECT checkout_id FROM invoice_items WHERE subscription_id = $2 "
            "AND invoiced_at IS NULL AND $1 = ANY(carried_by)) ORDER BY id FOR UPDATE",
            cid,
            subscription_id,
        )
        open_holders = {r["id"]: checkout_from_row(r) for r in holders}
        items = await self.conn.fetch(
            "SELECT id, amount_minor, checkout_id, invoiced_at, currency FROM invoice_items "
            "WHERE subscription_id = $2 AND (checkout_id = $1 OR $1 = ANY(carried_by)) "
            "ORDER BY created_at, id FOR UPDATE",
            cid,
            subscription_id,
        )
        take: list[UUID] = []
        taken_from: dict[UUID, int] = {}
        twice = 0
        currency = checkout.currency
        for item in items:
            if item["invoiced_at"] is not None:
                if item["checkout_id"] != cid:
                    twice += item["amount_minor"]
                continue
            take.append(item["id"])
            holder = item["checkout_id"]
            if holder != cid and holder in open_holders:
                taken_from[holder] = taken_from.get(holder, 0) + item["amount_minor"]
        # An open checkout it is taken from no longer carries it (its amount drops below), so
        # completing that one later does not count it as paid twice.
        await bill_items_by_checkout(self.conn, cid, take, list(open_holders), self.now)
        if twice:
            log.warning(
                "checkout %s completed late: items billed by another checkout were paid twice; "
                "crediting %s minor units",
                cid,
                twice,
            )
            await carry_credit(
                self.conn,
                subscription_id,
                currency,
                -twice,
                self.now,
                description="Credit: charges paid twice (a late payment of an expired checkout)",
            )
        for holder_id, amount in taken_from.items():
            await self.reduce_open_checkout(open_holders[holder_id], amount, subscription_id)

    async def reduce_open_checkout(
        self, checkout: Checkout, by_minor: int, subscription_id: UUID
    ) -> None:
        """Items worth ``by_minor`` were billed by another checkout: ``checkout`` (OPEN, locked)
        no longer asks for them."""

        amount = checkout.amount_minor - by_minor
        if amount < 0:
            await carry_credit(self.conn, subscription_id, checkout.currency, amount, self.now)
            amount = 0
        row = await set_checkout_amount(self.conn, checkout.id, amount, self.now)
        updated = checkout_from_row(row)
        await self.invoice_checkout_changed(updated)
        log.info(
            "checkout %s: %s minor units of its items were paid by a late checkout; it now "
            "asks for %s",
            checkout.id,
            by_minor,
            amount,
        )
        if updated.amount_paid_minor >= updated.amount_minor:
            await self.complete(updated, None, None)
        else:
            self.out.append(checkout_event("checkout.updated", updated, self.now))

    async def checkout_closed(self, ev: BillingEvent) -> None:
        checkout = await self.lock_checkout(ev.checkout_id, ev.provider_checkout_id)
        if checkout is None:
            log.info("%s %s for an unknown checkout: ignored", self.provider, ev.kind)
            return
        if not self.binds(checkout, ev.provider_checkout_id):
            log.warning(
                "%s %s of session %s names checkout %s, whose session is %s: ignored",
                self.provider,
                ev.kind,
                ev.provider_checkout_id,
                checkout.id,
                checkout.provider_checkout_id,
            )
            return
        if checkout.status != cm.OPEN:
            return
        status = cm.EXPIRED if ev.kind == EventKind.CHECKOUT_EXPIRED else cm.FAILED
        row = await set_checkout_status(self.conn, checkout.id, status, self.now)
        kind = "checkout.expired" if status == cm.EXPIRED else "checkout.failed"
        self.out.append(checkout_event(kind, checkout_from_row(row), self.now))

    # -- subscriptions --------------------------------------------------------------------------
