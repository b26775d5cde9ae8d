"""A Polar ``order`` → :class:`~billing_gql.ProviderInvoice` (mirrored by the core).

Polar, the merchant of record, invoices every order itself: ``invoice_number``,
``subtotal_amount``, ``discount_amount``, ``tax_amount``, ``total_amount``, ``due_amount``,
``status`` (``pending`` → OPEN, ``paid``/``refunded``/``partially_refunded`` → PAID,
``void`` → VOID) and ``items[]`` (``label``, ``amount``, ``proration``). Its PDF is generated
on request through Polar's API, so the mirror has no URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billing_gql import (
    Money,
    ProviderInvoice,
    ProviderInvoiceLine,
    metadata_of,
    money_from_minor,
    our_ids,
)
from billing_gql_polar.mapping import object_id, parse_time

__all__ = ["order_invoice"]

_STATUS = {
    "pending": "OPEN",
    "paid": "PAID",
    "refunded": "PAID",
    "partially_refunded": "PAID",
    "void": "VOID",
}


def order_invoice(order: Mapping[str, Any]) -> ProviderInvoice | None:
    """The order as the core mirrors it; ``None`` when it lacks an id, status or amount."""
    order_id = object_id(order.get("id"))
    status = _STATUS.get(str(order.get("status")))
    total = money_from_minor(order.get("total_amount"), order.get("currency"))
    if order_id is None or status is None or total is None:
        return None
    code = total.currency

    def money(key: str, default: int = 0) -> Money:
        found = money_from_minor(order.get(key), code)
        return found if found is not None else Money(default, code)

    lines = []
    raw_items = order.get("items")
    for item in raw_items if isinstance(raw_items, list) else []:
        amount = money_from_minor(item.get("amount"), code) if isinstance(item, Mapping) else None
        if amount is None:
            continue
        lines.append(
            ProviderInvoiceLine(
                description=str(item.get("label") or ""),
                amount=amount,
                kind="PRORATION" if item.get("proration") else "PLAN",
            )
        )
    tax = money("tax_amount")
    discount = money("discount_amount")
    if tax.minor:
        lines.append(ProviderInvoiceLine(description="Tax", amount=tax, kind="TAX"))
    checkout_id, customer_id, _ = our_ids(metadata_of(order))
    paid = status == "PAID"
    created = parse_time(order.get("created_at"))
    return ProviderInvoice(
        provider_invoice_id=order_id,
        status=status,
        total=total,
        subtotal=money("subtotal_amount", total.minor),
        amount_paid=total if paid else Money(0, code),
        amount_due=money("due_amount", 0 if paid else total.minor),
        discount=discount if discount.minor else None,
        tax=tax if tax.minor else None,
        number=order.get("invoice_number")
        if isinstance(order.get("invoice_number"), str)
        else None,
        issued_at=created,
        paid_at=(parse_time(order.get("modified_at")) or created) if paid else None,
        provider_subscription_id=object_id(order.get("subscription_id")),
        provider_customer_id=object_id(order.get("customer_id")),
        customer_id=customer_id,
        checkout_id=checkout_id
        if order.get("billing_reason") in ("purchase", "subscription_create")
        else None,
        lines=lines,
    )
