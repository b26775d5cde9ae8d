"""Payments' GraphQL face: Payment, payments, unmatchedPayments, assignPayment."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from billing_gql.applier.engine import assign_payment
from billing_gql.core.payments import Payment as PaymentModel
from billing_gql.core.payments import PaymentStatus as PaymentStatusValue
from billing_gql.core.payments import payment_from_row
from billing_gql.core.scopes import Scope
from billing_gql.customers.service import parse_uuid
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.graphql import typed
from billing_gql.graphql.auth import (
    admin_only,
    list_owner,
    require_admin,
)
from billing_gql.graphql.common import Connection, Money
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import user_errors
from billing_gql.graphql.loaders import related
from billing_gql.graphql.pages import Page, fetch_page, page_request
from billing_gql.graphql.types.customers import Customer, load_customer
from billing_gql.graphql.types.loaders import load_checkout

if TYPE_CHECKING:
    from billing_gql.graphql.types.checkout import Checkout, CheckoutPayload
    from billing_gql.graphql.types.refunds import Refund

PaymentStatus = strawberry.enum(PaymentStatusValue, name="PaymentStatus", graphql_name_from="value")


@strawberry.type(description="Money a provider reported.")
class Payment:
    model: strawberry.Private[PaymentModel]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.id))

    @strawberry.field
    def provider(self) -> str:
        return self.model.provider

    @typed.field(description="The provider's id: admin only (null for a customer token).")
    def provider_ref(self, info: Info) -> str | None:
        return admin_only(info, self.model.provider_ref)

    @strawberry.field
    def amount(self) -> Money:
        return Money.of(self.model.amount)

    @strawberry.field
    def amount_refunded(self) -> Money:
        return Money.minor(self.model.refunded_minor, self.model.currency)

    @typed.field(
        description="succeeded, failed, refunded, partially_refunded, unmatched, flagged "
        "(kept for operators, never counted: see flagReason), or disputed, dispute_won, "
        "dispute_lost (a chargeback open or closed; a lost one counts as a full refund)."
    )
    def status(self) -> PaymentStatus:  # type: ignore[valid-type]
        return self.model.status

    @typed.field(
        description="Why a flagged payment does not count: its reference was already received "
        "with another amount, or the provider's API did not confirm it."
    )
    def flag_reason(self) -> str | None:
        flag = (self.model.details or {}).get("flag")
        return flag if isinstance(flag, str) else None

    @typed.field(description="The bank transfer's payment reference, when it had one.")
    def reference(self) -> str | None:
        return self.model.reference

    @typed.field(
        description="Why this unmatched payment did not complete the checkout its provider's "
        "completion named (claimedCheckout): PROVIDER_CHECKOUT_MISMATCH (another provider "
        "session than the one created for it), CURRENCY_MISMATCH, AMOUNT_TOO_LOW or "
        "AMOUNT_MISSING. Null for other payments (a bank transfer matching no reference)."
    )
    def unmatched_reason(self) -> str | None:
        reason = (self.model.details or {}).get("unmatched_reason")
        return str(reason) if reason is not None and self.model.status == "unmatched" else None

    @typed.field(
        description="The checkout a provider's completion named when it did not match it "
        "(see unmatchedReason): assignPayment applies the payment to it once verified."
    )
    async def claimed_checkout(
        self, info: Info
    ) -> Annotated[Checkout, strawberry.lazy("billing_gql.graphql.types.checkout")] | None:
        from billing_gql.graphql.types.checkout import Checkout

        claimed = parse_uuid((self.model.details or {}).get("claimed_checkout_id"))
        if claimed is None or self.model.status != "unmatched":
            return None
        model = await load_checkout(info, claimed)
        return Checkout(model=model) if model else None

    @strawberry.field
    async def checkout(
        self, info: Info
    ) -> Annotated[Checkout, strawberry.lazy("billing_gql.graphql.types.checkout")] | None:
        from billing_gql.graphql.types.checkout import Checkout

        return await related(info, load_checkout, self.model.checkout_id, Checkout)

    @strawberry.field
    async def customer(self, info: Info) -> Customer | None:
        return await related(info, load_customer, self.model.customer_id, Customer)

    @strawberry.field
    def received_at(self) -> datetime:
        return self.model.received_at

    @typed.field(description="Its refunds (pending, succeeded and failed), oldest first.")
    async def refunds(
        self, info: Info
    ) -> list[Annotated[Refund, strawberry.lazy("billing_gql.graphql.types.refunds")]]:
        from billing_gql.graphql.types.refunds import Refund, refunds_of

        return [Refund(model=r) for r in await refunds_of(info, self.model.id)]


def _connection(page: Page) -> Connection[Payment]:
    return Connection.of(page, lambda r: Payment(model=payment_from_row(r)))


@strawberry.type
class PaymentQuery:
    @typed.field(
        scope=Scope.READ,
        description="Newest first. Admin (customerId optional), or a customer for itself.",
    )
    async def payments(
        self,
        info: Info,
        customer_id: strawberry.ID | None = None,
        first: int | None = 50,
        after: str | None = None,
    ) -> Connection[Payment]:
        owner = list_owner(info, customer_id)
        request = page_request(first, after)
        where = ["customer_id = $1"] if owner is not None else []
        page = await fetch_page(
            info.context.runtime.db.pool,
            table="payments",
            order_column="received_at",
            where=where,
            args=[owner] if owner is not None else [],
            request=request,
        )
        return _connection(page)

    @typed.field(
        scope=Scope.READ,
        description="Admin. Money received that matched no checkout, newest first.",
    )
    async def unmatched_payments(
        self,
        info: Info,
        provider: str | None = None,
        first: int | None = 50,
        after: str | None = None,
    ) -> Connection[Payment]:
        require_admin(info)
        request = page_request(first, after)
        where = ["status = 'unmatched'"]
        args: list[object] = []
        if provider is not None:
            args.append(provider.strip().lower())
            where.append("provider = $1")
        page = await fetch_page(
            info.context.runtime.db.pool,
            table="payments",
            order_column="received_at",
            where=where,
            args=args,
            request=request,
        )
        return _connection(page)


@strawberry.type
class PaymentMutation:
    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin. Apply an unmatched payment to a checkout as if it had "
        "matched (it completes once paid in full).",
    )
    async def assign_payment(
        self, info: Info, payment_id: strawberry.ID, checkout_id: strawberry.ID
    ) -> Annotated[CheckoutPayload, strawberry.lazy("billing_gql.graphql.types.checkout")]:
        from billing_gql.graphql.types.checkout import Checkout, CheckoutPayload

        require_admin(info)
        try:
            checkout, _ = await assign_payment(
                info.context.runtime, parse_uuid(payment_id), parse_uuid(checkout_id)
            )
        except (UserInputError, UserInputErrors) as exc:
            return CheckoutPayload(checkout=None, user_errors=user_errors(exc))
        return CheckoutPayload(checkout=Checkout(model=checkout), user_errors=[])
