"""Recording refunds: the one path by which a refund changes a payment.

Both ways a refund reaches us end here, inside the caller's transaction and under its lock of
the payment's row:

- ``refundPayment`` (:mod:`billing_gql.refunds`): a refund reserved as ``pending`` before the
  provider is called, then its outcome (:func:`record_refund` with our ``refund_id``); a refund
  made outside (SePay, manual) is recorded ``succeeded`` at once;
- the provider's refund events (``refund.succeeded`` / ``refund.failed``, from webhooks or
  reconciliation: :meth:`RefundApplier.refund_succeeded`): a refund we made carries our id in
  the provider's metadata and is found by it (or by the provider's refund id); one made in the
  provider's dashboard is new and gets its own row.

A refund counts once: only its move to ``succeeded`` adds it to the payment's
``refunded_minor`` (and its checkout's), sets the payment's status (a disputed payment keeps
its dispute status: the dispute says more than the refund), issues its credit note
(:func:`~billing_gql.invoices.credit_notes.issue_credit_note`, linked by
``refunds.credit_note_id``) and emits ``payment.refunded``; a repeat of a fact already
recorded changes nothing. The rows' unique keys (idempotency key; provider, provider refund
id; a credit note's payment and refunded total) and the payment's row lock make that hold
under concurrency too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from billing_gql.applier.base import ApplyError, lock_checkout_row
from billing_gql.applier.checkouts import CheckoutApplier
from billing_gql.core.events import refund_event
from billing_gql.core.payments import DISPUTE_STATUSES, Payment, payment_from_row
from billing_gql.core.refunds import Refund, RefundStatus, refund_from_row
from billing_gql.customers.service import parse_uuid
from billing_gql.invoices.credit_notes import issue_credit_note
from billing_gql.plugins.types import BillingEvent, DomainEvent, RefundInfo
from billing_gql.store.checkouts_sql import add_checkout_refund
from billing_gql.store.payments_sql import set_payment_refunded
from billing_gql.store.refunds_sql import (
    insert_refund_row,
    set_refund_credit_note,
    set_refund_status,
)

__all__ = [
    "RefundApplier",
    "RefundFact",
    "lock_payment",
    "record_refund",
    "refund_totals",
]

log = logging.getLogger("billing_gql.applier.engine")


@dataclass(frozen=True)
class RefundFact:
    """What is known of one refund: its outcome and whatever identifies it."""

    status: RefundStatus
    amount_minor: int | None = None
    """This refund's amount (required for a refund we have no row of yet)."""
    refund_id: UUID | None = None
    """Ours (a refund made through ``refundPayment``)."""
    provider_refund_id: str | None = None
    reason: str | None = None
    failure_reason: str | None = None


async def lock_payment(
    conn: asyncpg.Connection,
    *,
    payment_id: UUID | None = None,
    provider: str | None = None,
    provider_ref: str | None = None,
) -> Payment | None:
    """The payment, locked (``FOR UPDATE``), by our id or by (provider, provider ref); its
    checkout (and that checkout's subscription) first, in the documented lock order."""
    if payment_id is not None:
        await lock_checkout_row(
            conn, "id = (SELECT checkout_id FROM payments WHERE id = $1)", payment_id
        )
    else:
        await lock_checkout_row(
            conn,
            "id = (SELECT checkout_id FROM payments WHERE provider = $1 AND provider_ref = $2)",
            provider,
            provider_ref,
        )
    if payment_id is not None:
        row = await conn.fetchrow("SELECT * FROM payments WHERE id = $1 FOR UPDATE", payment_id)
    else:
        row = await conn.fetchrow(
            "SELECT * FROM payments WHERE provider = $1 AND provider_ref = $2 FOR UPDATE",
            provider,
            provider_ref,
        )
    return payment_from_row(row) if row else None


async def refund_totals(conn: asyncpg.Connection, payment: Payment) -> tuple[int, int]:
    """(succeeded, pending) sums of the payment's refunds; the succeeded sum is at least the
    payment's ``refunded_minor`` (refunds recorded as totals before rows existed)."""
    row = await conn.fetchrow(
        "SELECT COALESCE(SUM(amount_minor) FILTER (WHERE status = 'succeeded'), 0) AS done, "
        "COALESCE(SUM(amount_minor) FILTER (WHERE status = 'pending'), 0) AS held "
        "FROM refunds WHERE payment_id = $1",
        payment.id,
    )
    return max(int(row["done"]), payment.refunded_minor), int(row["held"])


async def _find(conn: asyncpg.Connection, payment: Payment, fact: RefundFact) -> Refund | None:
    if fact.refund_id is not None:
        row = await conn.fetchrow(
            "SELECT * FROM refunds WHERE id = $1 AND payment_id = $2", fact.refund_id, payment.id
        )
        if row is not None:
            return refund_from_row(row)
    if fact.provider_refund_id is not None:
        row = await conn.fetchrow(
            "SELECT * FROM refunds WHERE provider = $1 AND provider_refund_id = $2",
            payment.provider,
            fact.provider_refund_id,
        )
        if row is not None:
            return refund_from_row(row)
    return None


async def _count(
    conn: asyncpg.Connection, payment: Payment, refund: Refund, now: datetime, prefix: str
) -> tuple[Refund, Payment, list[DomainEvent]]:
    """Add a refund that just succeeded to its payment (and the payment's checkout) and issue
    its credit note (numbered with ``prefix``), linked through ``refunds.credit_note_id``."""
    total = min(payment.refunded_minor + refund.amount_minor, payment.amount_minor)
    status = "refunded" if total >= payment.amount_minor else "partially_refunded"
    if payment.status in DISPUTE_STATUSES:
        status = payment.status  # its dispute says more than the refund
    row = await set_payment_refunded(conn, payment.id, total, status)
    if payment.checkout_id is not None and total > payment.refunded_minor:
        await add_checkout_refund(conn, payment.checkout_id, total - payment.refunded_minor, now)
    updated = payment_from_row(row)
    note, events = await issue_credit_note(
        conn,
        prefix=prefix,
        payment_id=payment.id,
        refunded_before_minor=payment.refunded_minor,
        refunded_total_minor=total,
        now=now,
        reason=refund.reason,
    )
    if note is not None:
        refund = refund_from_row(await set_refund_credit_note(conn, refund.id, note.id, now))
    return refund, updated, [*events, refund_event(updated, refund, now)]


async def record_refund(
    conn: asyncpg.Connection,
    payment: Payment,
    fact: RefundFact,
    now: datetime,
    *,
    invoice_prefix: str,
) -> tuple[Refund | None, Payment, list[DomainEvent]]:
    """Record ``fact`` about a refund of ``payment`` (locked by the caller): the refund row
    as it now is (``None`` when nothing is recorded), the payment, and the domain events to
    emit once committed. A refund moves to ``succeeded`` (and counts, and gets its credit
    note, numbered with ``invoice_prefix``) once; a provider's success wins over our
    ``failed`` (an outage after the provider acted)."""
    found = await _find(conn, payment, fact)
    if found is None:
        if fact.status != RefundStatus.SUCCEEDED or not fact.amount_minor:
            return None, payment, []  # a failure or a pending refund we never held
        row = await insert_refund_row(
            conn,
            payment_id=payment.id,
            provider=payment.provider,
            amount_minor=fact.amount_minor,
            currency=payment.currency,
            status=RefundStatus.SUCCEEDED,
            origin="provider",
            reason=fact.reason,
            provider_refund_id=fact.provider_refund_id,
            reference=None,
            idempotency_key=None,
            revoke_access=False,
            now=now,
        )
        if row is None:  # pragma: no cover - the payment's lock serializes its refunds
            raise ApplyError(f"refund {fact.provider_refund_id} was recorded meanwhile")
        refund = refund_from_row(row)
        return await _count(conn, payment, refund, now, invoice_prefix)
    if found.status == RefundStatus.SUCCEEDED or fact.status == RefundStatus.PENDING:
        if fact.provider_refund_id and found.provider_refund_id is None:
            row = await set_refund_status(
                conn, found.id, found.status, now, provider_refund_id=fact.provider_refund_id
            )
            return refund_from_row(row), payment, []
        return found, payment, []
    if fact.status == RefundStatus.FAILED:
        if found.status == RefundStatus.FAILED:
            return found, payment, []
        row = await set_refund_status(
            conn,
            found.id,
            RefundStatus.FAILED,
            now,
            provider_refund_id=fact.provider_refund_id,
            failure_reason=fact.failure_reason or "the provider reported the refund failed",
        )
        return refund_from_row(row), payment, []
    row = await set_refund_status(
        conn,
        found.id,
        RefundStatus.SUCCEEDED,
        now,
        amount_minor=fact.amount_minor,
        provider_refund_id=fact.provider_refund_id,
    )
    refund = refund_from_row(row)
    return await _count(conn, payment, refund, now, invoice_prefix)


class RefundApplier(CheckoutApplier):
    """``refund.succeeded`` and ``refund.failed`` events, through :func:`record_refund`."""

    async def _refunded_payment(self, info: RefundInfo | None) -> tuple[RefundInfo, Payment]:
        if info is None:
            raise ApplyError("a refund event without refund details")
        payment = await lock_payment(
            self.conn, provider=self.provider, provider_ref=info.payment_provider_ref
        )
        if payment is None:
            raise ApplyError(
                f"refund of an unknown {self.provider} payment {info.payment_provider_ref}"
            )
        return info, payment

    @staticmethod
    def _fact(info: RefundInfo, status: RefundStatus, payment: Payment) -> RefundFact:
        amount = info.amount
        return RefundFact(
            status=status,
            amount_minor=amount.minor if amount and amount.currency == payment.currency else None,
            refund_id=parse_uuid(info.refund_id),
            provider_refund_id=info.provider_refund_id,
            reason=info.reason,
        )

    async def refund_succeeded(self, ev: BillingEvent) -> None:
        info, payment = await self._refunded_payment(ev.refund)
        if info.provider_refund_id is None and parse_uuid(info.refund_id) is None:
            await self._refunded_total(info, payment)
            return
        fact = self._fact(info, RefundStatus.SUCCEEDED, payment)
        _, _, events = await record_refund(
            self.conn, payment, fact, self.now, invoice_prefix=self.invoice_prefix
        )
        self.out += events

    async def refund_failed(self, ev: BillingEvent) -> None:
        info, payment = await self._refunded_payment(ev.refund)
        fact = self._fact(info, RefundStatus.FAILED, payment)
        _, _, events = await record_refund(
            self.conn, payment, fact, self.now, invoice_prefix=self.invoice_prefix
        )
        self.out += events

    async def _refunded_total(self, info: RefundInfo, payment: Payment) -> None:
        """A provider that reports only the total refunded on the payment: what it reports
        beyond the refunds we hold (succeeded, or pending: ours, in flight) is one refund made
        at the provider. A late, smaller total never lowers anything."""
        if info.amount_refunded is None or info.amount_refunded.currency != payment.currency:
            raise ApplyError("a refund event without this refund nor the refunded total")
        done, held = await refund_totals(self.conn, payment)
        gap = min(info.amount_refunded.minor, payment.amount_minor) - done - held
        if gap <= 0:
            return
        fact = RefundFact(status=RefundStatus.SUCCEEDED, amount_minor=gap, reason=info.reason)
        _, _, events = await record_refund(
            self.conn, payment, fact, self.now, invoice_prefix=self.invoice_prefix
        )
        self.out += events
