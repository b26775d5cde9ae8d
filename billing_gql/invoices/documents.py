"""An invoice's PDF document, read from the database (``GET /invoices/{id}.pdf``)."""

from __future__ import annotations

from uuid import UUID

from billing_gql.core.invoices import Invoice
from billing_gql.db.database import Database
from billing_gql.invoices.pdf import Buyer, render_invoice_pdf
from billing_gql.invoices.service import load_invoice
from billing_gql.settings import InvoiceSettings

__all__ = ["invoice_document", "load_invoice_head"]


async def load_invoice_head(db: Database, invoice_id: UUID) -> Invoice | None:
    """The invoice (with its lines), or ``None``."""
    return await load_invoice(db.pool, invoice_id)


async def invoice_document(db: Database, invoice: Invoice, seller: InvoiceSettings) -> bytes:
    """The PDF of ``invoice``: seller, buyer, number, dates, lines, totals, payment."""
    buyer = Buyer(None, None, None, None)
    if invoice.customer_id is not None:
        row = await db.fetchrow(
            "SELECT name, email, external_id, country FROM customers WHERE id = $1",
            invoice.customer_id,
        )
        if row is not None:
            buyer = Buyer(row["name"], row["email"], row["external_id"], row["country"])
    credited = None
    if invoice.credit_of is not None:
        credited = await db.fetchval("SELECT number FROM invoices WHERE id = $1", invoice.credit_of)
    return render_invoice_pdf(invoice, seller, buyer, credited)
