"""Invoices' GraphQL face: Invoice, invoice, invoices, Subscription.invoices."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import strawberry

from billing_gql.core.invoices import Invoice as InvoiceModel
from billing_gql.core.invoices import InvoiceKind, invoice_from_row
from billing_gql.core.invoices import InvoiceStatus as InvoiceStatusValue
from billing_gql.core.scopes import Scope
from billing_gql.customers.service import parse_uuid
from billing_gql.graphql import typed
from billing_gql.graphql.auth import admin_only, list_owner, require_customer, require_viewer
from billing_gql.graphql.common import Connection, Money
from billing_gql.graphql.context import Info
from billing_gql.graphql.loaders import related
from billing_gql.graphql.pages import Page, fetch_page, page_request
from billing_gql.graphql.types.customers import Customer, load_customer
from billing_gql.graphql.types.loaders import load_checkout, load_subscription
from billing_gql.graphql.types.usage import InvoiceLine
from billing_gql.invoices.links import pdf_url
from billing_gql.invoices.service import load_invoice, load_lines

if TYPE_CHECKING:
    from billing_gql.graphql.types.checkout import Checkout
    from billing_gql.graphql.types.subscriptions import Subscription

InvoiceStatus = strawberry.enum(InvoiceStatusValue, name="InvoiceStatus")


@strawberry.type(
    description="An invoice: ours (push providers: numbered PREFIX-YEAR-SEQUENCE when "
    "finalized), a credit note (negative total, CREDIT lines), or a provider's (Stripe "
    "invoice, Polar order) mirrored with its id, number, URLs and amounts."
)
class Invoice:
    model: strawberry.Private[InvoiceModel]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.id))

    @typed.field(description="Null while DRAFT. A provider's invoice keeps the provider's number.")
    def number(self) -> str | None:
        return self.model.number

    @strawberry.field
    def status(self) -> InvoiceStatus:  # type: ignore[valid-type]
        return self.model.status

    @typed.field(description="A credit note: the document of a refund (negative total).")
    def is_credit_note(self) -> bool:
        return self.model.kind == InvoiceKind.CREDIT_NOTE

    @typed.field(description="The invoice a credit note credits.")
    async def credit_of(self, info: Info) -> Invoice | None:
        if self.model.credit_of is None:
            return None
        found = await load_invoice(info.context.runtime.db.pool, self.model.credit_of)
        return Invoice(model=found) if found else None

    @strawberry.field
    async def customer(self, info: Info) -> Customer | None:
        return await related(info, load_customer, self.model.customer_id, Customer)

    @strawberry.field
    async def subscription(
        self, info: Info
    ) -> Annotated[Subscription, strawberry.lazy("billing_gql.graphql.types.subscriptions")] | None:
        from billing_gql.graphql.types.subscriptions import Subscription

        return await related(info, load_subscription, self.model.subscription_id, Subscription)

    @typed.field(description="The checkout that asks for (or asked for) this invoice's amount.")
    async def checkout(
        self, info: Info
    ) -> Annotated[Checkout, strawberry.lazy("billing_gql.graphql.types.checkout")] | None:
        from billing_gql.graphql.types.checkout import Checkout

        return await related(info, load_checkout, self.model.checkout_id, Checkout)

    @strawberry.field
    def currency(self) -> str:
        return self.model.currency

    @strawberry.field
    def period_start(self) -> datetime | None:
        return self.model.period_start

    @strawberry.field
    def period_end(self) -> datetime | None:
        return self.model.period_end

    @typed.field(description="When it was finalized (numbered).")
    def issued_at(self) -> datetime | None:
        return self.model.issued_at

    @strawberry.field
    def due_at(self) -> datetime | None:
        return self.model.due_at

    @strawberry.field
    def paid_at(self) -> datetime | None:
        return self.model.paid_at

    @strawberry.field
    async def lines(self, info: Info) -> list[InvoiceLine]:
        lines = self.model.lines
        if not lines:
            row = {"id": self.model.id, "currency": self.model.currency}
            lines = (await load_lines(info.context.runtime.db.pool, [row]))[self.model.id]
        return [InvoiceLine.of(line) for line in lines]

    @typed.field(description="Every line but discounts and taxes.")
    def subtotal(self) -> Money:
        return Money.minor(self.model.subtotal_minor, self.model.currency)

    @typed.field(description="Discounts, as a positive amount taken off.")
    def discount(self) -> Money:
        return Money.minor(self.model.discount_minor, self.model.currency)

    @strawberry.field
    def tax(self) -> Money:
        return Money.minor(self.model.tax_minor, self.model.currency)

    @strawberry.field
    def total(self) -> Money:
        return Money.minor(self.model.total_minor, self.model.currency)

    @strawberry.field
    def amount_paid(self) -> Money:
        return Money.minor(self.model.amount_paid_minor, self.model.currency)

    @strawberry.field
    def amount_due(self) -> Money:
        return Money.minor(self.model.amount_due_minor, self.model.currency)

    @typed.field(description="The provider the invoice's money goes through.")
    def provider(self) -> str:
        return self.model.provider

    @typed.field(description="The provider's invoice id (Stripe invoice, Polar order): admin only.")
    def provider_invoice_id(self, info: Info) -> str | None:
        return admin_only(info, self.model.provider_invoice_id)

    @typed.field(description="The provider's hosted invoice page, for a mirrored invoice.")
    def hosted_url(self) -> str | None:
        return self.model.hosted_url

    @typed.field(
        description="The PDF: for ours a signed link to GET /invoices/{id}.pdf that works "
        "without credentials until it expires (BILLING_GQL_INVOICE_LINK_TTL_SECONDS); for a "
        "mirrored invoice, the provider's PDF. Null for a draft."
    )
    def pdf_url(self, info: Info) -> str | None:
        if self.model.mirrored:
            return self.model.provider_pdf_url
        if self.model.number is None:
            return None
        return pdf_url(info.context.runtime.settings, self.model.id)

    @strawberry.field
    def created_at(self) -> datetime:
        return self.model.created_at


def _connection(page: Page) -> Connection[Invoice]:
    return Connection.of(page, lambda r: Invoice(model=invoice_from_row(r)))


async def subscription_invoices(info: Info, subscription_id: UUID, first: int) -> list[Invoice]:
    """A subscription's invoices, newest first (at most ``first``, clamped to 100)."""
    rows = await info.context.runtime.db.pool.fetch(
        "SELECT * FROM invoices WHERE subscription_id = $1 "
        "ORDER BY created_at DESC, id DESC LIMIT $2",
        subscription_id,
        max(0, min(first, 100)),
    )
    lines = await load_lines(info.context.runtime.db.pool, rows)
    return [Invoice(model=invoice_from_row(r, lines[r["id"]])) for r in rows]


@strawberry.type
class InvoiceQuery:
    @typed.field(scope=Scope.READ, description="Admin, or the invoice's own customer.")
    async def invoice(self, info: Info, id: strawberry.ID) -> Invoice | None:
        require_viewer(info)
        uid = parse_uuid(id)
        model = await load_invoice(info.context.runtime.db.pool, uid) if uid else None
        require_customer(info, model.customer_id if model else None)
        return Invoice(model=model) if model else None

    @typed.field(
        scope=Scope.READ,
        description="Newest first. Admin (customerId optional), or a customer for itself; "
        "status filters.",
    )
    async def invoices(
        self,
        info: Info,
        customer_id: strawberry.ID | None = None,
        status: InvoiceStatus | None = None,  # type: ignore[valid-type]
        first: int | None = 50,
        after: str | None = None,
    ) -> Connection[Invoice]:
        owner = list_owner(info, customer_id)
        request = page_request(first, after)
        where: list[str] = []
        args: list[object] = []
        if owner is not None:
            args.append(owner)
            where.append(f"customer_id = ${len(args)}")
        if status is not None:
            args.append(InvoiceStatusValue(status).value)
            where.append(f"status = ${len(args)}")
        page = await fetch_page(
            info.context.runtime.db.pool,
            table="invoices",
            order_column="created_at",
            where=where,
            args=args,
            request=request,
        )
        return _connection(page)
