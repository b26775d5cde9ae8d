"""Pricing a usage charge for a quantity (docs/api.md#charges, docs/api.md#rounding).

Pure functions: unit and tier prices may be finer than the currency's minor unit, so the amount
is computed exactly in :class:`~decimal.Decimal` major units and rounded once per line, half-up,
by :func:`billing_gql.money.round_line`.
"""

from __future__ import annotations

from decimal import Decimal

from billing_gql.core.catalog import Charge, Tier
from billing_gql.money import ceil_div, round_line, shown

__all__ = ["billable_quantity", "charge_amount", "charge_amount_major"]

_ZERO = Decimal(0)


def billable_quantity(aggregate: Decimal, charge: Charge) -> Decimal:
    """``q`` = the meter's aggregate minus the charge's included quantity, floored at 0."""
    return max(_ZERO, aggregate - charge.included_quantity)


def charge_amount_major(charge: Charge, quantity: Decimal) -> Decimal:
    """The unrounded price of ``quantity`` billable units, in major units.

    - PER_UNIT: ``q x unitAmount``
    - PACKAGE: ``ceil(q / packageSize) x unitAmount``
    - GRADUATED: each tier prices the units falling in it (``upTo`` inclusive) plus its
      ``flatAmount`` when any unit falls in it
    - VOLUME: all ``q`` at the first tier whose ``upTo`` holds ``q``, plus its ``flatAmount``

    ``q = 0`` costs 0 under every model (no flat amount either).
    """
    if quantity <= 0:
        return _ZERO
    if charge.model == "PER_UNIT":
        return quantity * _unit(charge)
    if charge.model == "PACKAGE":
        if not charge.package_size:
            raise ValueError("a PACKAGE charge needs a packageSize")
        return ceil_div(quantity, Decimal(charge.package_size)) * _unit(charge)
    if charge.model == "GRADUATED":
        return _graduated(_tiers(charge), quantity)
    if charge.model == "VOLUME":
        return _volume(_tiers(charge), quantity)
    raise ValueError(f"unknown charge model {shown(charge.model)}")


def charge_amount(charge: Charge, quantity: Decimal) -> int:
    """The price of ``quantity`` billable units in minor units of the charge's currency,
    rounded once, half-up."""
    return round_line(charge_amount_major(charge, quantity), charge.currency)


def _unit(charge: Charge) -> Decimal:
    if charge.unit_amount is None:
        raise ValueError(f"a {charge.model} charge needs a unitAmount")
    return charge.unit_amount


def _tiers(charge: Charge) -> tuple[Tier, ...]:
    if not charge.tiers:
        raise ValueError(f"a {charge.model} charge needs tiers")
    return charge.tiers


def _graduated(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    total = _ZERO
    lower = _ZERO
    for tier in tiers:
        upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
        units = upper - lower
        if units > 0:
            total += units * tier.unit_amount + tier.flat_amount
        if tier.up_to is None or quantity <= tier.up_to:
            break
        lower = tier.up_to
    return total


def _volume(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return quantity * tier.unit_amount + tier.flat_amount
    # Validation makes the last tier open-ended; a stored plan without one prices at its last.
    last = tiers[-1]
    return quantity * last.unit_amount + last.flat_amount
