"""Usage billed by Polar: a plan's Polar product must carry a metered price for each usage
charge, on a Polar meter that counts the events the charge's meter is forwarded under.

Usage reaches Polar as ingested events named by the meter's Polar reference
(``POST /v1/events/ingest``, :meth:`~billing_gql_polar.plugin.PolarProvider.report_usage`); a
Polar meter counts the events its ``filter`` selects, and a product price with
``amount_type: metered_unit`` bills that meter. Before a checkout of a plan with usage
charges, :func:`check_metered_prices` reads the product (``GET /v1/products/{id}``) and the
meters of its metered prices (``GET /v1/meters/{id}``) and refuses with
``PROVIDER_REF_MISSING``, naming the charge, when one would go unbilled. A token that may not
read products or meters (403) skips the check with a warning; an outage fails the checkout
(``PROVIDER_UNAVAILABLE``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from billing_gql import CheckoutRequest, UserInputError
from billing_gql_polar.api import PolarApi, PolarError

__all__ = ["check_metered_prices", "counted_event_names"]


def counted_event_names(node: object) -> set[str]:
    """The event names a Polar meter ``filter`` selects with ``name eq …`` clauses (nested
    filters included)."""
    names: set[str] = set()
    if not isinstance(node, Mapping):
        return names
    clauses = node.get("clauses")
    if isinstance(clauses, list):
        for clause in clauses:
            names |= counted_event_names(clause)
    elif (
        node.get("property") == "name"
        and node.get("operator") == "eq"
        and isinstance(node.get("value"), str)
    ):
        names.add(node["value"])
    return names


def _metered_meter_ids(product: Mapping[str, Any], currency: str) -> list[str]:
    """The meters the product's live metered prices in ``currency`` bill."""
    found: list[str] = []
    prices = product.get("prices")
    for price in prices if isinstance(prices, list) else []:
        if (
            isinstance(price, Mapping)
            and price.get("amount_type") == "metered_unit"
            and not price.get("is_archived")
            and str(price.get("price_currency", "")).lower() == currency.lower()
            and isinstance(price.get("meter_id"), str)
        ):
            found.append(price["meter_id"])
    return found


async def check_metered_prices(
    api: PolarApi, request: CheckoutRequest, log: logging.Logger
) -> None:
    """Refuse a checkout whose plan charges usage the Polar product does not bill (when the
    token may read the product; else ``log`` says the check was skipped).

    :raises UserInputError: ``PROVIDER_REF_MISSING`` naming the first unbilled charge.
    """
    charges = request.plan.usage_charges
    product_id = request.plan.provider_ref
    if not charges or not product_id:
        return
    try:
        product = await api.get_product(product_id)
    except PolarError as exc:
        if exc.status not in (401, 403):
            raise
        # The token may not read products (no ``products:read``): the check is skipped and
        # the checkout goes ahead, as before it existed; the operator is told.
        log.warning(
            "polar: cannot read product %s to check its metered prices (HTTP %s): "
            "give the token products:read and meters:read",
            product_id,
            exc.status,
        )
        return
    if product is None:
        raise UserInputError(
            "PROVIDER_REF_MISSING",
            f"plan {request.plan.code!r}: Polar has no product {product_id}",
            ["planCode"],
        )
    counted: set[str] = set()
    for meter_id in _metered_meter_ids(product, request.amount.currency):
        try:
            meter = await api.get_meter(meter_id)
        except PolarError as exc:
            if exc.status not in (401, 403):
                raise
            log.warning(
                "polar: cannot read meter %s (HTTP %s): check skipped", meter_id, exc.status
            )
            return
        if meter is not None and not meter.get("archived_at"):
            counted |= counted_event_names(meter.get("filter"))
    for charge in charges:
        if charge.meter_ref is None or charge.meter_ref not in counted:
            raise UserInputError(
                "PROVIDER_REF_MISSING",
                f"plan {request.plan.code!r}: the usage charge on meter {charge.meter_code!r} "
                f"has no metered price in Polar product {product_id} for "
                f"{request.amount.currency} (a metered_unit price on a Polar meter counting "
                f"events named {charge.meter_ref!r})",
                ["planCode"],
            )
