"""Refunds' GraphQL face: Refund, Payment.refunds (see types/payments.py), refundPayment."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import strawberry

from billing_gql.core.invoices import Invoice as InvoiceModel
from billing_gql.core.payments import Payment as PaymentModel
from billing_gql.core.refunds import Refund as RefundModel
from billing_gql.core.refunds import RefundStatus as RefundStatusValue
from billing_gql.core.scopes import Scope
from billing_gql.customers.service import parse_uuid
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.graphql import typed
from billing_gql.graphql.auth import admin_only, require_admin
from billing_gql.graphql.common import Money
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import UserError, user_errors
from billing_gql.graphql.loaders import by_key, group_by, loader, related_one
from billing_gql.graphql.types.invoices import Invoice
from billing_gql.graphql.types.payments import Payment
from billing_gql.invoices.service import load_invoices
from billing_gql.refunds.service import RefundInput, load_payments, load_refunds, refund_payment

RefundStatus = strawberry.enum(RefundStatusValue, name="RefundStatus", graphql_name_from="value")


async def load_payment(info: Info, payment_id: UUID) -> PaymentModel | None:
    async def batch(ids: Sequence[UUID]) -> list[PaymentModel | None]:
        found = await load_payments(info.context.runtime.db.pool, ids)
        return by_key(found, ids, lambda p: p.id)

    return await loader(info, "payment.by_id", batch).load(payment_id)


async def refunds_of(info: Info, payment_id: UUID) -> list[RefundModel]:
    """The payment's refunds, oldest first (one query per request for every payment)."""

    async def batch(ids: Sequence[UUID]) -> list[list[RefundModel]]:
        found = await load_refunds(info.context.runtime.db.pool, ids)
        return group_by(found, ids, lambda r: r.payment_id)

    return await loader(info, "refund.by_payment", batch).load(payment_id)


async def credit_note_of(info: Info, invoice_id: UUID) -> Invoice | None:
    """A refund's credit note (one query per request for every refund)."""

    async def batch(ids: Sequence[UUID]) -> list[InvoiceModel | None]:
        found = await load_invoices(info.context.runtime.db.pool, ids)
        return by_key(found, ids, lambda i: i.id)

    model = await loader(info, "invoice.by_id", batch).load(invoice_id)
    return Invoice(model=model) if model is not None else None


@strawberry.type(description="Money sent back to the buyer for (part of) a payment.")
class Refund:
    model: strawberry.Private[RefundModel]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.id))

    @typed.field(description="What this refund sends back, in the payment's currency.")
    def amount(self) -> Money:
        return Money.of(self.model.amount)

    @typed.field(
        description="pending (the amount is held; the provider has not confirmed it), "
        "succeeded, or failed (nothing was refunded, nothing is held)."
    )
    def status(self) -> RefundStatus:  # type: ignore[valid-type]
        return self.model.status

    @typed.field(description="The operator's reason, as given.")
    def reason(self) -> str | None:
        return self.model.reason

    @typed.field(
        description="API: made through refundPayment; PROVIDER: reported by the provider "
        "(e.g. made in its dashboard)."
    )
    def origin(self) -> str:
        return self.model.origin.upper()

    @typed.field(description="The provider's id of the refund: admin only.")
    def provider_refund_id(self, info: Info) -> str | None:
        return admin_only(info, self.model.provider_refund_id)

    @typed.field(
        description="The bank reference of a refund made outside the service (SePay, manual): "
        "admin only."
    )
    def reference(self, info: Info) -> str | None:
        return admin_only(info, self.model.reference)

    @typed.field(description="Why the provider refused it, or could not be reached.")
    def failure_reason(self) -> str | None:
        return self.model.failure_reason

    @strawberry.field
    async def payment(self, info: Info) -> Payment:
        return await related_one(info, load_payment, self.model.payment_id, Payment)

    @typed.field(
        description="The credit note issued for this refund (an Invoice of negative total), "
        "once it succeeded."
    )
    async def credit_note(self, info: Info) -> Invoice | None:
        if self.model.credit_note_id is None:
            return None
        return await credit_note_of(info, self.model.credit_note_id)

    @strawberry.field
    def created_at(self) -> datetime:
        return self.model.created_at

    @strawberry.field
    def updated_at(self) -> datetime:
        return self.model.updated_at


@strawberry.input
class RefundPaymentInput:
    payment_id: strawberry.ID
    amount: Decimal | None = strawberry.field(
        default=None,
        description="In the payment's currency (major units); null: all that is left of it.",
    )
    reason: str | None = None
    revoke_access: bool | None = strawberry.field(
        default=False, description="End the payment's subscription now."
    )
    idempotency_key: str | None = strawberry.field(
        default=None, description="A repeat answers the first refund (at most 255 characters)."
    )
    reference: str | None = strawberry.field(
        default=None,
        description="The bank reference of the transfer you made yourself; required where the "
        "provider cannot send money back (SePay, manual).",
    )


@strawberry.type
class RefundPayload:
    refund: Refund | None
    user_errors: list[UserError]


@strawberry.type
class RefundMutation:
    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin. Refund (part of) a payment: through the provider's API where it "
        "has one (Stripe, Polar), else recorded as made outside (SePay, manual: give "
        "reference). A provider's refusal or outage leaves the refund FAILED beside a "
        "userError.",
    )
    async def refund_payment(self, info: Info, input: RefundPaymentInput) -> RefundPayload:
        require_admin(info)
        payment_id = parse_uuid(input.payment_id)
        if payment_id is None:
            failed = UserInputError("NOT_FOUND", "no such payment", ["input", "paymentId"])
            return RefundPayload(refund=None, user_errors=user_errors(failed))
        request = RefundInput(
            payment_id=payment_id,
            amount=input.amount,
            reason=input.reason,
            revoke_access=bool(input.revoke_access),
            idempotency_key=input.idempotency_key,
            reference=input.reference,
        )
        try:
            outcome = await refund_payment(info.context.runtime, request)
        except (UserInputError, UserInputErrors) as exc:
            return RefundPayload(refund=None, user_errors=user_errors(exc))
        errors = [e for err in outcome.errors for e in user_errors(err)]
        return RefundPayload(refund=Refund(model=outcome.refund), user_errors=errors)
