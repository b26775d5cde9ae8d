"""Refunds through Polar's API (``POST /v1/refunds/``), idempotent on our refund id.

Polar takes no idempotency key, so a refund is first looked for among the order's refunds by
our id in its metadata (a retry after a lost answer finds the one made), and the creation is
never repeated after a 5xx by the HTTP client. Polar refunds an amount before tax and adds the
order's tax share itself (``tax_amount``), while billing-gql records what the buyer paid, tax
included: a refund of ``X`` asks for the part of ``X`` before tax, rounded half up, and is
recorded as what Polar reports (``amount + tax_amount``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billing_gql import METADATA_REFUND_ID, ProviderError, RefundRequest, RefundResult
from billing_gql_polar.api import PolarApi

__all__ = ["STATUSES", "make_refund", "pre_tax_share", "refund_result"]

STATUSES = {
    "succeeded": "succeeded",
    "pending": "pending",
    "failed": "failed",
    "canceled": "failed",
}
"""Polar's refund statuses → ``RefundResult.status``."""


def pre_tax_share(amount: int, details: Mapping[str, Any]) -> int:
    """The part of ``amount`` (tax included) before tax, by the order's ``net_amount`` and
    ``tax_amount`` as the payment recorded them; ``amount`` itself when there was no tax."""
    net, tax = details.get("net_amount"), details.get("tax_amount")
    if not isinstance(net, int) or not isinstance(tax, int) or tax <= 0 or net <= 0:
        return amount
    total = net + tax
    return (2 * amount * net + total) // (2 * total)


def refund_result(refund: Mapping[str, Any]) -> RefundResult:
    status = STATUSES.get(str(refund.get("status")), "pending")
    return RefundResult(
        provider_refund_id=str(refund["id"]),
        status=status,
        failure_reason=f"Polar: the refund is {refund.get('status')}"
        if status == "failed"
        else None,
    )


async def make_refund(api: PolarApi, request: RefundRequest) -> RefundResult:
    """Find the refund made for ``request.refund_id``, else create it."""
    order_id = request.payment_provider_ref
    for refund in await api.list_refunds(order_id):
        if (refund.get("metadata") or {}).get(METADATA_REFUND_ID) == request.refund_id:
            return refund_result(refund)
    amount = pre_tax_share(request.amount.minor, request.payment_details)
    if amount <= 0:
        raise ProviderError("Polar: the amount before tax rounds to nothing")
    body: dict[str, Any] = {
        "order_id": order_id,
        "reason": "other",
        "amount": amount,
        "metadata": dict(request.metadata),
    }
    if request.reason:
        body["comment"] = request.reason
    return refund_result(await api.create_refund(body))
