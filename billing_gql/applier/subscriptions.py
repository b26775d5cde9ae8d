"""Applying subscriptions: creating one from a completed checkout, renewing it, and provider
snapshots (``SUBSCRIPTION_UPDATED`` and the snapshots other events carry), behind one ordering
check (:meth:`SubscriptionApplier.admits`)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from billing_gql.applier.base import (
    LIVE_FOR_PLAN,
    AlreadySubscribed,
    ApplyError,
    enter_period,
    initial_period,
    live_subscription,
    next_period,
)
from billing_gql.applier.invoices import InvoiceApplier
from billing_gql.applier.refresh import (
    version_of,
)
from billing_gql.core import checkout as cm
from billing_gql.core.catalog import Plan
from billing_gql.core.checkout import Checkout, checkout_from_row
from billing_gql.core.events import checkout_event, subscription_event
from billing_gql.core.subscriptions import Subscription, subscription_from_row
from billing_gql.money import shown
from billing_gql.plugins.types import (
    BillingEvent,
    SubscriptionSnapshot,
)
from billing_gql.store.checkouts_sql import (
    buy_renewal_period,
    expire_superseded_renewals,
    flag_already_subscribed,
    link_checkout_subscription,
)
from billing_gql.store.invoice_items_sql import RENEWAL_PAID_TWICE, carry_credit
from billing_gql.store.subscriptions_sql import (
    apply_subscription_snapshot,
    insert_subscription_row,
    set_origin_checkout,
)

log = logging.getLogger("billing_gql.applier.engine")


def _origin(checkout: Checkout | None) -> UUID | None:
    """The checkout a subscription was first bought through (a purchase, not a renewal)."""
    return checkout.id if checkout and checkout.purpose == cm.CheckoutPurpose.NEW else None


class SubscriptionApplier(InvoiceApplier):
    async def subscription_for(
        self,
        checkout: Checkout,
        plan: Plan,
        snapshot: SubscriptionSnapshot | None,
        version: datetime | None,
    ) -> Subscription:
        """The subscription a completed new-purchase checkout made (created once)."""
        sub = await self.lock_subscription(
            provider_subscription_id=snapshot.provider_subscription_id if snapshot else None,
            origin_checkout_id=checkout.id,
        )
        if sub is not None:
            if sub.origin_checkout_id is None:
                await set_origin_checkout(self.conn, sub.id, checkout.id)
            # The completion may carry an older state than one applied already (the
            # subscription's own delivery came first): the same ordering check as any snapshot.
            if snapshot is not None and self.admits(sub, snapshot, version):
                sub = await self.update_from_snapshot(sub, snapshot, version)
            return sub
        if snapshot is not None:
            mapped = await self.plan_id_for_ref(snapshot.plan_ref, snapshot.currency)
            if mapped is not None and mapped != plan.id:
                plan = await self.plan(mapped)
        return await self.insert_subscription(
            customer_id=checkout.customer_id,
            plan=plan,
            currency=checkout.currency,
            quantity=checkout.quantity,
            origin_checkout_id=checkout.id,
            snapshot=snapshot,
            version=version,
            trial_days=checkout.trial_days,
        )

    async def already_subscribed(self, checkout: Checkout, existing: Subscription) -> None:
        """``checkout`` (a new purchase, locked) completed while its customer already had a
        live subscription to the plan (it was created before that one completed): no second
        subscription. What it was paid is never lost: it stays recorded as the checkout's
        payment, and comes back as a credit on the live subscription (the next push renewal
        deducts it; a provider-managed one keeps it for the record) when the currencies
        match. The checkout is flagged ``ALREADY_SUBSCRIBED`` for the operator (to refund)."""

        paid = checkout.amount_paid_minor - checkout.refunded_minor
        credited = paid > 0 and existing.currency == checkout.currency
        if credited:
            await carry_credit(
                self.conn,
                existing.id,
                checkout.currency,
                -paid,
                self.now,
                description=f"Credit: checkout {checkout.id} paid for a plan already subscribed",
            )
        log.warning(
            "checkout %s completed while subscription %s to its plan is live: no second "
            "subscription; %s minor units paid%s",
            checkout.id,
            existing.id,
            paid,
            " and credited to it" if credited else "",
        )
        await flag_already_subscribed(
            self.conn,
            checkout.id,
            "the customer already had a live subscription to this plan"
            + (f"; the {paid} minor units paid were credited to it" if credited else "")
            + (
                f"; {paid} minor units paid are to be refunded" if paid > 0 and not credited else ""
            ),
        )

    async def insert_subscription(
        self,
        *,
        customer_id: UUID,
        plan: Plan,
        currency: str,
        quantity: int,
        origin_checkout_id: UUID | None,
        snapshot: SubscriptionSnapshot | None,
        version: datetime | None,
        trial_days: int = 0,
    ) -> Subscription:
        """Create a subscription (once per origin checkout and provider subscription id).

        :raises AlreadySubscribed: it would be a second live one of the customer to ``plan``
            (the unique index ``subscriptions_live_plan_key`` decides, also between
            concurrent transactions).
        """
        status, start, end, trial_end, anchor = initial_period(plan, self.now, trial_days)
        values: dict[str, Any] = {
            "customer_id": customer_id,
            "plan_id": plan.id,
            "provider": self.provider,
            "provider_subscription_id": None,
            "status": status,
            "currency": currency,
            "quantity": quantity,
            "current_period_start": start,
            "current_period_end": end,
            "trial_end": trial_end,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "ended_at": None,
            "origin_checkout_id": origin_checkout_id,
            "provider_updated_at": None,
            "billing_anchor": anchor,
            "created_at": self.now,
            "updated_at": self.now,
        }
        if snapshot is not None:
            snap_values = _snapshot_values(snapshot)
            for name in ("current_period_start", "current_period_end", "currency"):
                if snap_values[name] is None:
                    snap_values.pop(name)
            values.update(snap_values)
            values["provider_updated_at"] = version
            values["billing_anchor"] = values["current_period_start"]
        row = await insert_subscription_row(self.conn, values)
        if row is None:
            # A concurrent transaction created it first (the unique keys decided).
            found = await self.lock_subscription(
                provider_subscription_id=values["provider_subscription_id"],
                origin_checkout_id=origin_checkout_id,
            )
            if found is None:
                live = await live_subscription(self.conn, customer_id, plan.id)
                if live is not None and values["status"] in LIVE_FOR_PLAN:
                    raise AlreadySubscribed(live)
                raise ApplyError("the subscription could not be created nor found")
            return found
        sub = subscription_from_row(row)
        if sub.trial_end is not None:
            # The customer's one trial of this plan (taken already when a bank-transfer
            # checkout claimed it before completing at once).
            await self.conn.execute(
                "INSERT INTO trial_redemptions (customer_id, plan_id, subscription_id, "
                "created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id, plan_id) DO "
                "UPDATE SET subscription_id = COALESCE(trial_redemptions.subscription_id, "
                "EXCLUDED.subscription_id)",
                sub.customer_id,
                sub.plan_id,
                sub.id,
                self.now,
            )
        self.out.append(subscription_event("subscription.created", sub, self.now))
        return sub

    async def renew(self, subscription_id: UUID, checkout: Checkout) -> None:
        """A paid push renewal buys the period after the one it was issued in (which ends at
        ``checkout.renews_from``), recorded on the checkout (``paid_period_start/end``).

        Paid ahead of that period end, the subscription stays where it is until then: its
        current period (which usage, ``invoicePreview`` and metered limits count in), its
        status and its plan. The worker's period-end sweep moves it into the paid period at
        that moment (:func:`enter_period`). Paid after it (PAST_DUE), the paid period starts
        at the old period end at once; when access had lapsed (EXPIRED), it starts now.

        A period is bought once (the unique index ``checkouts_renewal_paid_key``; its
        renewals are decided one at a time under the subscription's row lock). A second
        payment for it — another renewal checkout of the same period, one that expired while
        the subscription stayed live and was paid late — or for a period that is no longer
        the next one, or at a plan the next period is no longer at (a plan change since),
        completes its checkout and buys nothing: its price comes back as a pending credit for
        the next push checkout. Once a period is paid, its other OPEN renewal checkouts
        expire (nothing is owed for it any more).
        """
        sub = await self.lock_subscription(subscription_id=subscription_id)
        if sub is None:
            raise ApplyError(f"renewal of an unknown subscription {subscription_id}")
        if sub.status == "CANCELED":
            log.warning("renewal %s paid for canceled subscription %s", checkout.id, sub.id)
            return
        plan = await self.plan(checkout.plan_id)
        if sub.status == "EXPIRED":
            other = await live_subscription(self.conn, sub.customer_id, plan.id, besides=sub.id)
            if other is not None:
                # Access lapsed and the customer bought the plan anew since: this late
                # payment revives nothing (one live subscription per plan); it is credited.
                await self.credit_renewal(other, checkout, plan)
                return
        if sub.status == "EXPIRED" or sub.current_period_end is None:
            start = self.now  # access lapsed: the paid period starts now
        else:
            start = sub.current_period_end
        renews_from = checkout.renews_from or sub.current_period_end or start
        if (
            sub.current_period_end is not None and renews_from != sub.current_period_end
        ) or plan.id != sub.plan_at(renews_from):
            # Issued for a period that has started since (bought by another renewal), that
            # is gone (the subscription moved to a new period), or at a plan the subscription
            # left since (a plan change voided it): nothing of it is left to buy.
            await self.credit_renewal(sub, checkout, plan)
            return
        _, end = next_period(sub, plan, start)
        bought = await buy_renewal_period(
            self.conn, checkout.id, sub.id, renews_from=renews_from, start=start, end=end
        )
        if bought is None:
            await self.credit_renewal(sub, checkout, plan)
            return
        # The period is paid: another renewal of it (or of an older one) is void.
        voided = await expire_superseded_renewals(
            self.conn, sub.id, renews_from, checkout.id, self.now
        )
        self.out += [
            checkout_event("checkout.expired", checkout_from_row(r), self.now) for r in voided
        ]
        # Paid ahead, it waits for the period end (the worker's sweep moves it then); a plan
        # change scheduled for then is the plan it paid for (``Subscription.plan_at``).
        if start <= self.now:
            updated = await enter_period(self.conn, sub, plan, start=start, end=end, now=self.now)
            self.out.append(subscription_event("subscription.updated", updated, self.now))

    async def credit_renewal(self, sub: Subscription, checkout: Checkout, plan: Plan) -> None:
        """``checkout`` (a renewal, paid) buys no period: its price becomes a pending credit
        for ``sub``'s next push checkout (the invoice items it carried are settled apart)."""

        price = plan.price(checkout.currency)
        amount = price.minor * checkout.quantity if price is not None else 0
        log.warning(
            "renewal %s of subscription %s paid for a period paid already (or gone): "
            "crediting %s minor units",
            checkout.id,
            sub.id,
            amount,
        )
        if amount:
            await carry_credit(
                self.conn,
                sub.id,
                checkout.currency,
                -amount,
                self.now,
                description=RENEWAL_PAID_TWICE,
            )

    async def subscription_updated(self, ev: BillingEvent) -> None:
        if ev.subscription is None:
            raise ApplyError("subscription.updated without a subscription snapshot")
        await self.apply_snapshot(
            ev.subscription, version_of(ev.subscription, ev.occurred_at), event=ev
        )

    async def apply_snapshot(
        self,
        snap: SubscriptionSnapshot,
        version: datetime | None,
        *,
        event: BillingEvent | None = None,
        checkout: Checkout | None = None,
    ) -> Subscription | None:
        """Create or update a provider-managed subscription from its snapshot; never regress."""
        if checkout is None:
            cid = snap.checkout_id or (event.checkout_id if event else None)
            checkout = await self.lock_checkout(cid, None) if cid else None  # checkout first
        sub = await self.lock_subscription(
            provider_subscription_id=snap.provider_subscription_id,
            subscription_id=snap.subscription_id,
            origin_checkout_id=_origin(checkout),
        )
        if sub is not None:
            if not self.admits(sub, snap, version):
                return sub
            return await self.update_from_snapshot(sub, snap, version)
        customer_id = await self.resolve_customer(
            snap.customer_id or (event.customer_id if event else None),
            snap.external_customer_id or (event.external_customer_id if event else None),
            snap.provider_customer_id or (event.provider_customer_id if event else None),
        )
        if customer_id is None and checkout is not None:
            customer_id = checkout.customer_id
        if customer_id is None:
            raise ApplyError(
                f"cannot tell whose {self.provider} subscription "
                f"{snap.provider_subscription_id} this is"
            )
        plan_id = await self.plan_id_for_ref(snap.plan_ref, snap.currency)
        if plan_id is None and checkout is not None:
            plan_id = checkout.plan_id
        if plan_id is None:
            raise ApplyError(f"no plan has the {self.provider} reference {shown(snap.plan_ref)}")
        plan = await self.plan(plan_id)
        currency = (
            snap.currency
            or (checkout.currency if checkout else None)
            or (plan.prices[0].currency if plan.prices else None)
        )
        if currency is None:
            raise ApplyError("the subscription's currency is unknown")
        try:
            sub = await self.insert_subscription(
                customer_id=customer_id,
                plan=plan,
                currency=currency.upper(),
                quantity=snap.quantity or (checkout.quantity if checkout else 1),
                origin_checkout_id=_origin(checkout),
                snapshot=snap,
                version=version,
            )
        except AlreadySubscribed as exc:
            # A provider's second live subscription to a plan the customer holds (made at
            # the provider, or by a checkout completed as a duplicate): not recorded as one;
            # its payments still are (as the customer's), for the operator to refund.
            log.warning(
                "%s subscription %s duplicates live subscription %s of the same plan: not recorded",
                self.provider,
                snap.provider_subscription_id,
                exc.existing.id,
            )
            return None
        if checkout is not None and checkout.subscription_id is None:
            await link_checkout_subscription(self.conn, checkout.id, sub.id, self.now)
        await self.learn_customer(customer_id, snap.provider_customer_id)
        return sub

    def admits(
        self, sub: Subscription, snap: SubscriptionSnapshot, version: datetime | None
    ) -> bool:
        """THE ordering check: whether ``snap`` (the provider's state at ``version``) may
        overwrite ``sub``. Every path that writes a provider snapshot asks it first.

        Admitted: a state without a version (our own operation's result: the newest we know),
        a strictly newer one, or one re-fetched from the provider after ``sub``'s current
        version was applied. Not admitted: an older one. A tie (times in whole seconds) is
        admitted only from a provider that cannot be asked (the later delivery wins); from one
        that can, it was re-fetched before this transaction, so a tie here means a concurrent
        apply moved the version meanwhile: the delivery is retried (and re-fetched) later.
        """
        current = sub.provider_updated_at
        if version is None or current is None or version > current:
            return True
        psid = snap.provider_subscription_id
        if psid in self.refreshed:
            if self.refreshed[psid] == current:
                return True
        elif version == current:
            if not self.can_fetch:
                return True
            if self.retry_unsettled:
                raise ApplyError(
                    f"{self.provider} snapshot of {sub.id} ties with one applied meanwhile; "
                    "retrying to re-fetch it"
                )
        log.info(
            "%s snapshot of %s from %s is not newer than %s: ignored",
            self.provider,
            sub.id,
            version.isoformat(),
            current.isoformat(),
        )
        return False

    async def update_from_snapshot(
        self, sub: Subscription, snap: SubscriptionSnapshot, version: datetime | None
    ) -> Subscription:
        values = _snapshot_values(snap)
        plan_id = await self.plan_id_for_ref(snap.plan_ref, snap.currency or sub.currency)
        values["plan_id"] = plan_id or sub.plan_id
        values["quantity"] = snap.quantity or sub.quantity
        values["current_period_start"] = values["current_period_start"] or sub.current_period_start
        values["current_period_end"] = values["current_period_end"] or sub.current_period_end
        if values["provider_subscription_id"] is None:
            values["provider_subscription_id"] = sub.provider_subscription_id
        values.pop("currency", None)
        if values["plan_id"] == sub.pending_plan_id:
            values["pending_plan_id"] = None
            values["pending_plan_at"] = None
        if values["status"] in LIVE_FOR_PLAN and (
            sub.status not in LIVE_FOR_PLAN or values["plan_id"] != sub.plan_id
        ):
            other = await live_subscription(
                self.conn, sub.customer_id, values["plan_id"], besides=sub.id
            )
            if other is not None:
                # The provider made a second live subscription of one customer to one plan
                # (e.g. an INCOMPLETE one paid after another was bought): it is not recorded
                # as live; its payments are, for the operator to refund.
                log.warning(
                    "%s subscription %s would be a second live one to the plan of %s: "
                    "its status and plan are kept",
                    self.provider,
                    sub.id,
                    other.id,
                )
                values["status"] = sub.status
                values["plan_id"] = sub.plan_id
        values["updated_at"] = self.now
        row = await apply_subscription_snapshot(self.conn, sub.id, version, values)
        updated = subscription_from_row(row)
        await self.learn_customer(updated.customer_id, snap.provider_customer_id)
        self.out.append(subscription_event("subscription.updated", updated, self.now))
        return updated

    # -- payments -------------------------------------------------------------------------------


def _snapshot_values(snap: SubscriptionSnapshot) -> dict[str, Any]:
    return {
        "provider_subscription_id": snap.provider_subscription_id or None,
        "status": str(snap.status),
        "current_period_start": snap.current_period_start,
        "current_period_end": snap.current_period_end,
        "trial_end": snap.trial_end,
        "cancel_at_period_end": snap.cancel_at_period_end,
        "canceled_at": snap.canceled_at,
        "ended_at": snap.ended_at,
        "currency": snap.currency.upper() if snap.currency else None,
        "quantity": snap.quantity or 1,
    }
