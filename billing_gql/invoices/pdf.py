"""Rendering an invoice (or credit note, or receipt) as a PDF with fpdf2 (pure Python).

The PDF core fonts cover Latin-1 only: other characters are written without their accents
(``Nguyễn`` → ``Nguyen``, ``đ`` → ``d``) or as ``?``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fpdf import FPDF

from billing_gql.core.invoices import Invoice, InvoiceKind, InvoiceStatus
from billing_gql.money import Money
from billing_gql.settings import InvoiceSettings

__all__ = ["Buyer", "format_money", "render_invoice_pdf"]


@dataclass(frozen=True)
class Buyer:
    name: str | None
    email: str | None
    external_id: str | None
    country: str | None


def format_money(minor: int, currency: str) -> str:
    """``1,234.50 USD``, ``199,000 VND`` (the currency's own digits, thousands grouped)."""
    amount = Money(minor, currency).amount
    sign = "-" if amount.startswith("-") else ""
    whole, _, fraction = amount.lstrip("-").partition(".")
    grouped = f"{int(whole):,}"
    return f"{sign}{grouped}{'.' + fraction if fraction else ''} {currency}"


def _latin1(text: str) -> str:
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return plain.encode("latin-1", "replace").decode("latin-1")


def _date(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value is not None else "-"


class _Document(FPDF):
    def write_line(self, text: str, *, size: int = 10, bold: bool = False, height: int = 6) -> None:
        self.set_font("Helvetica", "B" if bold else "", size)
        self.multi_cell(0, height, _latin1(text), new_x="LMARGIN", new_y="NEXT")

    def row(self, cells: Sequence[tuple[str, float, str]], *, bold: bool = False) -> None:
        self.set_font("Helvetica", "B" if bold else "", 9)
        for text, width, align in cells:
            self.cell(width, 6, _latin1(text), border="B", align=align)
        self.ln(6)


def _title(invoice: Invoice) -> str:
    return "Credit note" if invoice.kind == InvoiceKind.CREDIT_NOTE else "Invoice"


def _header(pdf: _Document, invoice: Invoice, seller: InvoiceSettings, buyer: Buyer) -> None:
    pdf.write_line(
        f"{_title(invoice)} {invoice.number or '(draft)'}", size=18, bold=True, height=10
    )
    if invoice.status == InvoiceStatus.PAID:
        pdf.write_line(
            "PAID" if invoice.kind == InvoiceKind.INVOICE else "REFUNDED", size=14, bold=True
        )
        pdf.write_line(
            f"Paid on {_date(invoice.paid_at)} via {invoice.paid_provider or invoice.provider}"
            + (f", reference {invoice.paid_reference}" if invoice.paid_reference else "")
        )
    else:
        pdf.write_line(f"Status: {invoice.status.value}")
    pdf.ln(3)
    pdf.write_line("Seller", bold=True)
    for text in [seller.seller_name, *seller.seller_address.splitlines()]:
        if text.strip():
            pdf.write_line(text.strip())
    if seller.seller_tax_id:
        pdf.write_line(f"Tax id: {seller.seller_tax_id}")
    pdf.ln(2)
    pdf.write_line("Bill to", bold=True)
    external = f"Customer {buyer.external_id}" if buyer.external_id else None
    for who in (buyer.name, buyer.email, external):
        if who:
            pdf.write_line(who)
    if buyer.country:
        pdf.write_line(f"Country: {buyer.country}")
    pdf.ln(2)
    pdf.write_line(f"Issued: {_date(invoice.issued_at)}    Due: {_date(invoice.due_at)}")
    if invoice.period_start or invoice.period_end:
        pdf.write_line(f"Period: {_date(invoice.period_start)} to {_date(invoice.period_end)}")
    pdf.ln(3)


def _lines(pdf: _Document, invoice: Invoice) -> None:
    pdf.row(
        [("Description", 78, "L"), ("Period", 40, "L"), ("Qty", 16, "R"), ("Amount", 46, "R")],
        bold=True,
    )
    for line in invoice.lines:
        period = (
            f"{_date(line.period_start)} - {_date(line.period_end)}"
            if line.period_start and line.period_end
            else ""
        )
        pdf.row(
            [
                (f"{line.description} ({line.kind})", 78, "L"),
                (period, 40, "L"),
                (f"{line.quantity.normalize():f}", 16, "R"),
                (format_money(line.amount.minor, invoice.currency), 46, "R"),
            ]
        )
    pdf.ln(3)


def _totals(pdf: _Document, invoice: Invoice) -> None:
    rows = [("Subtotal", invoice.subtotal_minor)]
    if invoice.discount_minor:
        rows.append(("Discount", -invoice.discount_minor))
    if invoice.tax_minor:
        rows.append(("Tax", invoice.tax_minor))
    rows += [
        ("Total", invoice.total_minor),
        ("Amount paid", invoice.amount_paid_minor),
        ("Amount due", invoice.amount_due_minor),
    ]
    for label, minor in rows:
        pdf.row(
            [(label, 134, "R"), (format_money(minor, invoice.currency), 46, "R")],
            bold=label == "Total",
        )


def render_invoice_pdf(
    invoice: Invoice, seller: InvoiceSettings, buyer: Buyer, credited_number: str | None = None
) -> bytes:
    """The invoice as PDF bytes: seller, buyer, number, dates, lines, totals, what was paid."""
    pdf = _Document(format="A4")
    pdf.set_title(_latin1(f"{_title(invoice)} {invoice.number or ''}"))
    pdf.set_creator("billing-gql")
    pdf.add_page()
    _header(pdf, invoice, seller, buyer)
    if credited_number:
        pdf.write_line(f"Credits invoice {credited_number}")
        pdf.ln(2)
    _lines(pdf, invoice)
    _totals(pdf, invoice)
    return bytes(pdf.output())
