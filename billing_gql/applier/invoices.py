"""Applying ``INVOICE_UPDATED`` (a provider's invoice, mirrored) and the invoice side of the
other events: a push checkout's invoice when it completes or its amount changes. (A refund's
credit note is issued by :func:`billing_gql.applier.refunds.record_refund`.)"""

from __future__ import annotations

from uuid import UUID

from billing_gql.applier.base import ApplierBase, ApplyError
from billing_gql.core.checkout import Checkout
from billing_gql.customers.service import parse_uuid
from billing_gql.invoices.mirror import mirror_provider_invoice
from billing_gql.invoices.service import mark_checkout_invoice_paid, sync_checkout_invoice
from billing_gql.plugins.types import BillingEvent


class InvoiceApplier(ApplierBase):
    @property
    def invoice_prefix(self) -> str:
        return self.runtime.settings.invoices.prefix

    def issues_invoices(self, provider: str) -> bool:
        """Whether we issue the invoices of ``provider``'s checkouts (push providers: manual,
        bank transfers); card providers' own invoices are mirrored instead."""
        if provider not in self.runtime.providers:
            return False
        return not self.runtime.providers[provider].cls.charges_renewals

    async def invoice_checkout_paid(self, checkout: Checkout) -> None:
        """``checkout`` (locked) completed: its invoice is paid (a receipt)."""
        if self.issues_invoices(checkout.provider):
            self.out += await mark_checkout_invoice_paid(
                self.conn, self.invoice_prefix, checkout, self.now
            )

    async def invoice_checkout_changed(self, checkout: Checkout) -> None:
        """``checkout`` (OPEN, locked) asks for another amount: its invoice follows."""
        if self.issues_invoices(checkout.provider):
            self.out += await sync_checkout_invoice(
                self.conn, self.invoice_prefix, checkout, self.now
            )

    async def invoice_updated(self, ev: BillingEvent) -> None:
        info = ev.invoice
        if info is None:
            raise ApplyError("invoice.updated without an invoice")
        customer_id = await self.resolve_customer(
            info.customer_id or ev.customer_id,
            ev.external_customer_id,
            info.provider_customer_id or ev.provider_customer_id,
        )
        subscription_id: UUID | None = None
        if info.provider_subscription_id:
            subscription_id = await self.conn.fetchval(
                "SELECT id FROM subscriptions WHERE provider = $1 "
                "AND provider_subscription_id = $2",
                self.provider,
                info.provider_subscription_id,
            )
        checkout_uid = parse_uuid(info.checkout_id)
        checkout_id: UUID | None = None
        if checkout_uid is not None:
            checkout_id = await self.conn.fetchval(
                "SELECT id FROM checkouts WHERE id = $1 AND provider = $2",
                checkout_uid,
                self.provider,
            )
        self.out += await mirror_provider_invoice(
            self.conn,
            self.provider,
            info,
            customer_id=customer_id,
            subscription_id=subscription_id,
            checkout_id=checkout_id,
            occurred_at=ev.occurred_at,
            now=self.now,
        )
