"""Subscription values as services return them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

LIVE_STATUSES = ("TRIALING", "ACTIVE", "PAST_DUE")
"""Statuses that grant entitlements (docs/api.md#entitlements)."""
ENDED_STATUSES = ("CANCELED", "EXPIRED")


@dataclass(frozen=True)
class Subscription:
    id: UUID
    customer_id: UUID
    plan_id: UUID
    provider: str
    provider_subscription_id: str | None
    status: str
    currency: str
    quantity: int
    current_period_start: datetime | None
    current_period_end: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    paused_at: datetime | None
    origin_checkout_id: UUID | None
    provider_updated_at: datetime | None
    pending_plan_id: UUID | None
    pending_plan_at: datetime | None
    billing_anchor: datetime | None
    created_at: datetime
    updated_at: datetime

    def plan_at(self, moment: datetime) -> UUID:
        """The plan it is on from ``moment`` on: the pending plan once its change is due by
        then (what a push renewal of the period starting at ``moment`` bills and buys)."""
        if self.pending_plan_id is not None and (
            self.pending_plan_at is None or self.pending_plan_at <= moment
        ):
            return self.pending_plan_id
        return self.plan_id


def subscription_from_row(row: Any) -> Subscription:
    return Subscription(
        id=row["id"],
        customer_id=row["customer_id"],
        plan_id=row["plan_id"],
        provider=row["provider"],
        provider_subscription_id=row["provider_subscription_id"],
        status=row["status"],
        currency=row["currency"],
        quantity=row["quantity"],
        current_period_start=row["current_period_start"],
        current_period_end=row["current_period_end"],
        trial_end=row["trial_end"],
        cancel_at_period_end=row["cancel_at_period_end"],
        canceled_at=row["canceled_at"],
        ended_at=row["ended_at"],
        paused_at=row["paused_at"],
        origin_checkout_id=row["origin_checkout_id"],
        provider_updated_at=row["provider_updated_at"],
        pending_plan_id=row["pending_plan_id"],
        pending_plan_at=row["pending_plan_at"],
        billing_anchor=row["billing_anchor"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
