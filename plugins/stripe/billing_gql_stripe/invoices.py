"""A Stripe ``invoice`` object → :class:`~billing_gql.ProviderInvoice` (mirrored by the core).

Fields read (API 2025-03-31 and later, the older ones as a fallback): ``status``, ``number``,
``currency``, ``subtotal``, ``total``, ``amount_paid``, ``amount_remaining``,
``total_discount_amounts[].amount``, ``total_taxes[].amount`` (else ``total -
total_excluding_tax``), ``hosted_invoice_url``, ``invoice_pdf``, ``period_start/end``,
``status_transitions.finalized_at/paid_at``, ``due_date`` and ``lines.data[]`` (``description``,
``amount``, ``quantity``, ``period``, ``pricing.unit_amount_decimal``, and whether the line is
a proration).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from billing_gql import (
    Money,
    ProviderInvoice,
    ProviderInvoiceLine,
    money_from_minor,
    our_ids,
)
from billing_gql_stripe.mapping import object_id, timestamp

__all__ = ["invoice_mirror"]

_STATUS = {
    "draft": "DRAFT",
    "open": "OPEN",
    "paid": "PAID",
    "void": "VOID",
    "uncollectible": "UNCOLLECTIBLE",
}


def _sum(items: Any) -> int | None:
    if not isinstance(items, list):
        return None
    amounts: list[int] = [
        i["amount"] for i in items if isinstance(i, Mapping) and isinstance(i.get("amount"), int)
    ]
    return sum(amounts)


def _line(line: Mapping[str, Any], currency: str) -> ProviderInvoiceLine | None:
    amount = money_from_minor(line.get("amount"), currency)
    if amount is None:
        return None
    parent = line.get("parent")
    details = parent.get("subscription_item_details") if isinstance(parent, Mapping) else None
    proration = bool(details.get("proration")) if isinstance(details, Mapping) else False
    proration = proration or bool(line.get("proration"))
    pricing = line.get("pricing")
    unit: Money | None = None
    raw_unit = pricing.get("unit_amount_decimal") if isinstance(pricing, Mapping) else None
    if isinstance(raw_unit, str):
        try:
            value = Decimal(raw_unit)
        except InvalidOperation:
            value = None
        if value is not None and value == value.to_integral_value():
            unit = Money(int(value), currency)
    period = line.get("period")
    quantity = line.get("quantity")
    kind = "PRORATION" if proration else ("CREDIT" if amount.minor < 0 else "PLAN")
    return ProviderInvoiceLine(
        description=str(line.get("description") or ""),
        amount=amount,
        kind=kind,
        quantity=Decimal(quantity) if isinstance(quantity, int) else Decimal(1),
        unit_amount=unit,
        period_start=timestamp(period.get("start")) if isinstance(period, Mapping) else None,
        period_end=timestamp(period.get("end")) if isinstance(period, Mapping) else None,
    )


def invoice_mirror(
    invoice: Mapping[str, Any], subscription: tuple[str | None, Mapping[str, Any]]
) -> ProviderInvoice | None:
    """The invoice as the core mirrors it; ``None`` when it lacks an id, status or amounts.

    :param subscription: (Stripe subscription id, its metadata) of the invoice.
    """
    invoice_id = object_id(invoice.get("id"))
    status = _STATUS.get(str(invoice.get("status")))
    currency = invoice.get("currency")
    total = money_from_minor(invoice.get("total"), currency)
    if invoice_id is None or status is None or total is None:
        return None
    code = total.currency

    def money(key: str, default: int = 0) -> Money:
        found = money_from_minor(invoice.get(key), code)
        return found if found is not None else Money(default, code)

    discount = _sum(invoice.get("total_discount_amounts"))
    tax = _sum(invoice.get("total_taxes"))
    if tax is None and isinstance(invoice.get("total_excluding_tax"), int):
        tax = total.minor - invoice["total_excluding_tax"]
    transitions = invoice.get("status_transitions")
    transitions = transitions if isinstance(transitions, Mapping) else {}
    lines_obj = invoice.get("lines")
    raw_lines = lines_obj.get("data") if isinstance(lines_obj, Mapping) else None
    lines = [
        found
        for line in (raw_lines if isinstance(raw_lines, list) else [])
        if isinstance(line, Mapping) and (found := _line(line, code)) is not None
    ]
    sub_id, meta = subscription
    checkout_id, customer_id, _ = our_ids(meta)
    return ProviderInvoice(
        provider_invoice_id=invoice_id,
        status=status,
        total=total,
        subtotal=money("subtotal", total.minor),
        amount_paid=money("amount_paid"),
        amount_due=money("amount_remaining", money("amount_due").minor),
        discount=Money(discount, code) if discount else None,
        tax=Money(tax, code) if tax else None,
        number=invoice.get("number") if isinstance(invoice.get("number"), str) else None,
        hosted_url=invoice.get("hosted_invoice_url") or None,
        pdf_url=invoice.get("invoice_pdf") or None,
        period_start=timestamp(invoice.get("period_start")),
        period_end=timestamp(invoice.get("period_end")),
        issued_at=timestamp(transitions.get("finalized_at")),
        due_at=timestamp(invoice.get("due_date")),
        paid_at=timestamp(transitions.get("paid_at")),
        provider_subscription_id=sub_id,
        provider_customer_id=object_id(invoice.get("customer")),
        customer_id=customer_id,
        checkout_id=checkout_id if invoice.get("billing_reason") == "subscription_create" else None,
        lines=lines,
    )
