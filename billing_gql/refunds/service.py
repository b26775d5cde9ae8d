"""``refundPayment``: refund (part of) a payment.

1. **Validate** everything before writing: the payment, the amount (a decimal string in the
   payment's currency; the rest of the payment when omitted), the provider, the lengths. A
   provider that moves no money (SePay, manual: no ``refund_payment``) needs the operator's
   ``reference`` of the transfer made outside.
2. **Reserve**, in one transaction under the payment's row lock: the refund is inserted
   ``pending`` only when the payment's succeeded and pending refunds plus this one stay within
   the payment (``REFUND_EXCEEDS_PAYMENT`` otherwise), so concurrent requests for the whole
   remainder refund once. A repeated ``idempotencyKey`` (unique in the table) answers the
   first refund instead. A refund made outside is recorded ``succeeded`` right there.
3. **Call the provider** outside any transaction, with our refund id as its idempotency key
   and in its metadata.
4. **Record the outcome** through :func:`~billing_gql.applier.refunds.record_refund`, the path
   the provider's refund webhooks take too (so a refund counts once, whichever comes first).
   A refusal or an outage marks the refund ``failed`` (its reservation released) and is
   answered as a user error beside the refund.
5. ``revokeAccess``: once the refund went through (or is pending at the provider), the
   payment's subscription is canceled now (the usual cancel-now path).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg

from billing_gql.applier.refunds import RefundFact, lock_payment, record_refund, refund_totals
from billing_gql.context import ServiceContext
from billing_gql.core.payments import Payment, payment_from_row
from billing_gql.core.refunds import Refund, RefundStatus, refund_from_row
from billing_gql.core.subscriptions import ENDED_STATUSES
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.money import Money, shown
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.refund_types import RefundRequest
from billing_gql.plugins.types import METADATA_REFUND_ID, DomainEvent
from billing_gql.store.refunds_sql import insert_refund_row
from billing_gql.subscriptions.service import cancel_subscription
from billing_gql.subscriptions.steps import call_provider, get_subscription
from billing_gql.validation import Problems

__all__ = ["RefundInput", "RefundOutcome", "load_payments", "load_refunds", "refund_payment"]

log = logging.getLogger(__name__)

REFUNDABLE = ("succeeded", "partially_refunded", "refunded", "dispute_won")
"""Payment statuses ``refundPayment`` accepts: a won dispute left the money with the merchant;
an open dispute (``disputed``) or a lost one (already counted as a full refund) is not."""
MAX_KEY = 255
MAX_REASON = 500
MAX_REFERENCE = 255


@dataclass(frozen=True)
class RefundInput:
    payment_id: UUID | None
    amount: object = None
    """A decimal string (or Decimal) in the payment's currency; ``None``: the rest."""
    reason: str | None = None
    revoke_access: bool = False
    idempotency_key: str | None = None
    reference: str | None = None


@dataclass(frozen=True)
class RefundOutcome:
    refund: Refund
    payment: Payment
    errors: list[UserInputError] = field(default_factory=list)
    """What went wrong after the refund was stored (the provider refused or could not be
    reached: the refund is ``failed``; revoking access failed)."""


async def load_refunds(
    conn: asyncpg.Connection | asyncpg.Pool, payment_ids: Sequence[UUID]
) -> list[Refund]:
    """The refunds of these payments, oldest first."""
    rows = await conn.fetch(
        "SELECT * FROM refunds WHERE payment_id = ANY($1::uuid[]) ORDER BY seq",
        list(payment_ids),
    )
    return [refund_from_row(r) for r in rows]


async def load_payments(
    conn: asyncpg.Connection | asyncpg.Pool, payment_ids: Sequence[UUID]
) -> list[Payment]:
    """The payments with these ids (in no particular order)."""
    rows = await conn.fetch("SELECT * FROM payments WHERE id = ANY($1::uuid[])", list(payment_ids))
    return [payment_from_row(r) for r in rows]


def _text(value: str | None, limit: int, name: str, problems: Problems) -> str | None:
    text = value.strip() if value is not None else None
    if text is not None and not text:
        text = None
    if text is not None and len(text) > limit:
        problems.add("INVALID_INPUT", f"{name} must be at most {limit} characters", "input", name)
    return text


async def _by_key(conn: asyncpg.Connection | asyncpg.Pool, key: str | None) -> Refund | None:
    if key is None:
        return None
    row = await conn.fetchrow("SELECT * FROM refunds WHERE idempotency_key = $1", key)
    return refund_from_row(row) if row else None


async def _replay(runtime: ServiceContext, refund: Refund, request: RefundInput) -> RefundOutcome:
    """A repeated idempotency key: the first refund, if the request names the same payment."""
    if refund.payment_id != request.payment_id:
        raise UserInputError(
            "IDEMPOTENCY_CONFLICT",
            "this idempotencyKey was used for a refund of another payment",
            ["input", "idempotencyKey"],
        )
    row = await runtime.db.pool.fetchrow("SELECT * FROM payments WHERE id = $1", refund.payment_id)
    return RefundOutcome(refund=refund, payment=payment_from_row(row))


def _amount(request: RefundInput, payment: Payment) -> int | None:
    """The requested amount in minor units (``None``: the rest of the payment)."""
    if request.amount is None:
        return None
    problems = Problems()
    minor = problems.amount(request.amount, payment.currency, "input", "amount")
    if not problems and minor <= 0:
        problems.add("INVALID_AMOUNT", "a refund must be more than zero", "input", "amount")
    problems.raise_if_any()
    return minor


def _provider(runtime: ServiceContext, payment: Payment, reference: str | None) -> Provider:
    provider = runtime.providers.get_configured(payment.provider)
    if provider is None:
        raise UserInputError(
            "PROVIDER_NOT_CONFIGURED", f"provider {shown(payment.provider)} is not configured"
        )
    if not type(provider).makes_refunds() and reference is None:
        raise UserInputError(
            "INVALID_INPUT",
            f"{payment.provider} cannot send money back: make the transfer yourself and give "
            "its bank reference",
            ["input", "reference"],
        )
    return provider


def _check_room(payment: Payment, wanted: int | None, done: int, held: int) -> int:
    """The amount to reserve; REFUND_EXCEEDS_PAYMENT when it does not fit what is left."""
    if payment.status not in REFUNDABLE:
        raise UserInputError(
            "PAYMENT_NOT_REFUNDABLE",
            f"a {payment.status} payment cannot be refunded",
            ["input", "paymentId"],
        )
    left = payment.amount_minor - done - held
    amount = left if wanted is None else wanted
    if amount <= 0 or amount > left:
        what = Money(max(left, 0), payment.currency)
        pending = f" ({Money(held, payment.currency)} pending)" if held else ""
        raise UserInputError(
            "REFUND_EXCEEDS_PAYMENT",
            f"only {what} of the payment is left to refund{pending}",
            ["input", "amount"],
        )
    return amount


async def _reserve(
    runtime: ServiceContext, payment_id: UUID, request: RefundInput, outside: bool
) -> tuple[Refund | None, Payment, list[DomainEvent]]:
    """Insert the refund under the payment's lock (``None``: its key was taken meanwhile)."""
    now = await runtime.clock.now()
    async with runtime.db.transaction() as conn:
        payment = await lock_payment(conn, payment_id=payment_id)
        assert payment is not None  # payments are never deleted
        if await _by_key(conn, request.idempotency_key) is not None:
            return None, payment, []
        done, held = await refund_totals(conn, payment)
        amount = _check_room(payment, _amount(request, payment), done, held)
        row = await insert_refund_row(
            conn,
            payment_id=payment.id,
            provider=payment.provider,
            amount_minor=amount,
            currency=payment.currency,
            status=RefundStatus.PENDING,
            origin="api",
            reason=request.reason,
            provider_refund_id=None,
            reference=request.reference,
            idempotency_key=request.idempotency_key,
            revoke_access=request.revoke_access,
            now=now,
        )
        if row is None:
            return None, payment, []
        refund = refund_from_row(row)
        if not outside:
            return refund, payment, []
        fact = RefundFact(status=RefundStatus.SUCCEEDED, refund_id=refund.id)
        recorded, payment, events = await record_refund(
            conn, payment, fact, now, invoice_prefix=runtime.settings.invoices.prefix
        )
        assert recorded is not None
        return recorded, payment, events


async def _at_provider(
    runtime: ServiceContext, provider: Provider, refund: Refund, payment: Payment
) -> tuple[Refund, Payment, list[DomainEvent], UserInputError | None]:
    """Ask the provider, then record its answer (a failure releases the reservation)."""
    request = RefundRequest(
        refund_id=str(refund.id),
        payment_provider_ref=payment.provider_ref or "",
        amount=refund.amount,
        idempotency_key=f"billing-gql-refund-{refund.id}",
        reason=refund.reason,
        payment_details=dict(payment.details or {}),
        metadata={METADATA_REFUND_ID: str(refund.id)},
    )
    failure: UserInputError | None = None
    try:
        result = await call_provider(provider, provider.refund_payment(request), "refund")
        fact = RefundFact(
            status=RefundStatus(result.status),
            refund_id=refund.id,
            provider_refund_id=result.provider_refund_id,
            failure_reason=result.failure_reason,
        )
        if fact.status == RefundStatus.FAILED:
            failure = UserInputError(
                "PROVIDER_ERROR", result.failure_reason or f"{provider.name} refused the refund"
            )
    except UserInputError as exc:
        failure = exc
        fact = RefundFact(
            status=RefundStatus.FAILED, refund_id=refund.id, failure_reason=exc.message
        )
    now = await runtime.clock.now()
    async with runtime.db.transaction() as conn:
        locked = await lock_payment(conn, payment_id=payment.id)
        assert locked is not None
        recorded, payment, events = await record_refund(
            conn, locked, fact, now, invoice_prefix=runtime.settings.invoices.prefix
        )
    assert recorded is not None
    return recorded, payment, events, failure


async def _revoke(runtime: ServiceContext, payment: Payment) -> UserInputError | None:
    """End the payment's subscription now; a failure is reported, the refund stands."""
    sub_id = payment.subscription_id
    if sub_id is None and payment.checkout_id is not None:
        # A purchase's first payment is recorded before the subscription it creates.
        sub_id = await runtime.db.pool.fetchval(
            "SELECT subscription_id FROM checkouts WHERE id = $1", payment.checkout_id
        )
    sub = await get_subscription(runtime.db.pool, sub_id)
    if sub is None or sub.status in ENDED_STATUSES:
        return None
    try:
        await cancel_subscription(runtime, sub.id, at_period_end=False)
    except UserInputError as exc:
        return UserInputError(
            exc.code, f"the refund stands, but the subscription was not ended: {exc.message}"
        )
    return None


async def refund_payment(runtime: ServiceContext, request: RefundInput) -> RefundOutcome:
    """Refund (part of) a payment; see the module docstring.

    :raises UserInputError: (nothing written) NOT_FOUND, INVALID_INPUT, INVALID_AMOUNT,
        AMOUNT_TOO_LARGE, PROVIDER_NOT_CONFIGURED, PAYMENT_NOT_REFUNDABLE,
        REFUND_EXCEEDS_PAYMENT, IDEMPOTENCY_CONFLICT.
    """
    problems = Problems()
    key = _text(request.idempotency_key, MAX_KEY, "idempotencyKey", problems)
    reason = _text(request.reason, MAX_REASON, "reason", problems)
    reference = _text(request.reference, MAX_REFERENCE, "reference", problems)
    problems.raise_if_any()
    request = RefundInput(
        request.payment_id, request.amount, reason, request.revoke_access, key, reference
    )
    pool = runtime.db.pool
    existing = await _by_key(pool, key)
    if existing is not None:
        return await _replay(runtime, existing, request)
    row = await pool.fetchrow("SELECT * FROM payments WHERE id = $1", request.payment_id)
    if row is None:
        raise UserInputError("NOT_FOUND", "no such payment", ["input", "paymentId"])
    payment = payment_from_row(row)
    _amount(request, payment)  # reported before anything else is looked at
    provider = _provider(runtime, payment, reference)
    outside = not type(provider).makes_refunds()
    refund, payment, events = await _reserve(runtime, payment.id, request, outside)
    if refund is None:  # the same key won a race meanwhile
        raced = await _by_key(pool, key)
        if raced is None:  # pragma: no cover - keys are never deleted
            raise UserInputErrors([UserInputError("INVALID_STATE", "retry")])
        return await _replay(runtime, raced, request)
    failure = None
    if not outside:
        refund, payment, events, failure = await _at_provider(runtime, provider, refund, payment)
    for event in events:
        await runtime.emit(event)
    errors = [failure] if failure is not None else []
    if request.revoke_access and refund.status != RefundStatus.FAILED:
        revoked = await _revoke(runtime, payment)
        errors += [revoked] if revoked is not None else []
    return RefundOutcome(refund=refund, payment=payment, errors=errors)
