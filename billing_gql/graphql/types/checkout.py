"""Checkouts' GraphQL face: Checkout, BankTransfer, checkout, createCheckout,
completeManualCheckout."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import strawberry

from billing_gql.checkout import service
from billing_gql.checkout.manual import complete_manual_checkout
from billing_gql.core.checkout import Checkout as CheckoutModel
from billing_gql.core.checkout import CheckoutPurpose as CheckoutPurposeValue
from billing_gql.core.scopes import Scope
from billing_gql.customers.service import parse_uuid
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.graphql import typed
from billing_gql.graphql.auth import require_admin, require_customer, require_viewer
from billing_gql.graphql.common import Money
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import UserError, user_errors
from billing_gql.graphql.loaders import related, related_one
from billing_gql.graphql.types.catalog import Plan
from billing_gql.graphql.types.customers import Customer, load_customer
from billing_gql.graphql.types.loaders import load_checkout, load_plan, load_subscription
from billing_gql.money import Money as MoneyValue
from billing_gql.money import format_minor

if TYPE_CHECKING:
    from billing_gql.graphql.types.subscriptions import Subscription


CheckoutPurpose = strawberry.enum(
    CheckoutPurposeValue, name="CheckoutPurpose", graphql_name_from="value"
)


@strawberry.enum
class CheckoutStatus(StrEnum):
    OPEN = "OPEN"
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"


def _qr_for_due(url: str, original: MoneyValue, due: MoneyValue) -> str:
    """The QR image URL asking for what remains due: a provider's QR URL that carries the
    original amount in an ``amount`` parameter gets the remaining amount instead."""
    if due.minor == original.minor:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name == "amount" for name, _ in query):
        return url
    value = format_minor(due.minor, due.currency)
    query = [(name, value if name == "amount" else v) for name, v in query]
    return urlunsplit(parts._replace(query=urlencode(query)))


@strawberry.type(description="How to pay by bank transfer; amount (and the QR) is what remains.")
class BankTransfer:
    bank_code: str
    account_number: str
    account_name: str | None
    reference: str
    amount: Money
    qr_code_url: str


@strawberry.type
class Checkout:
    model: strawberry.Private[CheckoutModel]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.id))

    @strawberry.field
    def status(self) -> CheckoutStatus:
        return CheckoutStatus(self.model.status)

    @strawberry.field
    def provider(self) -> str:
        return self.model.provider

    @typed.field(description="new (a first purchase), renewal, or invoice (pending charges).")
    def purpose(self) -> CheckoutPurpose:  # type: ignore[valid-type]
        return self.model.purpose

    @typed.field(description="The provider's hosted page, when it hosts one.")
    def url(self) -> str | None:
        return self.model.url

    @typed.field(description="Price times quantity (± pending charges for renewals).")
    def amount(self) -> Money:
        return Money.of(self.model.amount)

    @strawberry.field
    def amount_paid(self) -> Money:
        return Money.of(self.model.amount_paid)

    @strawberry.field
    def quantity(self) -> int:
        return self.model.quantity

    @strawberry.field
    def expires_at(self) -> datetime | None:
        return self.model.expires_at

    @strawberry.field
    def created_at(self) -> datetime:
        return self.model.created_at

    @strawberry.field
    def completed_at(self) -> datetime | None:
        return self.model.completed_at

    @typed.field(description="Why it FAILED (the provider's explanation).")
    def error(self) -> str | None:
        return self.model.error

    @strawberry.field
    async def customer(self, info: Info) -> Customer:
        return await related_one(info, load_customer, self.model.customer_id, Customer)

    @strawberry.field
    async def plan(self, info: Info) -> Plan:
        return await related_one(info, load_plan, self.model.plan_id, Plan)

    @typed.field(description="The subscription it created or renews.")
    async def subscription(
        self, info: Info
    ) -> Annotated[Subscription, strawberry.lazy("billing_gql.graphql.types.subscriptions")] | None:
        from billing_gql.graphql.types.subscriptions import Subscription

        return await related(info, load_subscription, self.model.subscription_id, Subscription)

    @strawberry.field
    def bank_transfer(self) -> BankTransfer | None:
        raw = self.model.bank_transfer
        if not raw:
            return None
        original = MoneyValue(int(raw["amount_minor"]), raw["currency"])
        due = self.model.amount_due if original.currency == self.model.currency else original
        return BankTransfer(
            bank_code=raw["bank_code"],
            account_number=raw["account_number"],
            account_name=raw.get("account_name"),
            reference=raw["reference"],
            amount=Money.of(due),
            qr_code_url=_qr_for_due(raw["qr_code_url"], original, due),
        )


@strawberry.input
class CreateCheckoutInput:
    customer_id: strawberry.ID
    plan_code: str
    provider: str | None = None
    currency: str | None = None
    quantity: int | None = 1
    success_url: str | None = None
    cancel_url: str | None = None
    idempotency_key: str | None = strawberry.field(
        default=None, description="Scoped per customer: the same key returns the same checkout."
    )


@strawberry.type
class CheckoutPayload:
    checkout: Checkout | None
    user_errors: list[UserError]


@strawberry.type
class CheckoutQuery:
    @typed.field(scope=Scope.READ, description="Admin, or the checkout's own customer.")
    async def checkout(self, info: Info, id: strawberry.ID) -> Checkout | None:
        require_viewer(info)
        uid = parse_uuid(id)
        model = await load_checkout(info, uid) if uid else None
        require_customer(info, model.customer_id if model else None)
        return Checkout(model=model) if model else None


@strawberry.type
class CheckoutMutation:
    @typed.mutation(
        scope=Scope.ADMIN, description="Admin, or the customer itself. Start buying a plan."
    )
    async def create_checkout(self, info: Info, input: CreateCheckoutInput) -> CheckoutPayload:
        customer_id = parse_uuid(input.customer_id)
        viewer = require_customer(info, customer_id)
        draft = service.CheckoutDraft(
            customer_id=customer_id,
            plan_code=input.plan_code,
            provider=input.provider,
            currency=input.currency,
            quantity=input.quantity if input.quantity is not None else 1,
            success_url=input.success_url,
            cancel_url=input.cancel_url,
            idempotency_key=input.idempotency_key,
            by_admin=viewer.is_admin,
        )
        try:
            result = await service.create_checkout(info.context.runtime, draft)
        except (UserInputError, UserInputErrors) as exc:
            return CheckoutPayload(checkout=None, user_errors=user_errors(exc, ["input"]))
        # A provider's error names the field it refused under the argument, else the argument.
        errors = user_errors(result.error, ["input"]) if result.error else []
        return CheckoutPayload(checkout=Checkout(model=result.checkout), user_errors=errors)

    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin; BILLING_GQL_MANUAL_PROVIDER=1. Record the payment of a manual "
        "checkout and complete it.",
    )
    async def complete_manual_checkout(
        self, info: Info, checkout_id: strawberry.ID
    ) -> CheckoutPayload:
        require_admin(info)
        try:
            model = await complete_manual_checkout(info.context.runtime, parse_uuid(checkout_id))
        except (UserInputError, UserInputErrors) as exc:
            return CheckoutPayload(checkout=None, user_errors=user_errors(exc))
        return CheckoutPayload(checkout=Checkout(model=model), user_errors=[])
