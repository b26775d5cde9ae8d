"""Per-request DataLoaders of the billing engine's GraphQL types (plans, checkouts,
subscriptions, entitlements), so a page of objects costs a fixed number of statements."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from billing_gql.catalog.plans import load_plans
from billing_gql.checkout.service import load_checkouts, open_push_checkouts, paid_renewals
from billing_gql.core.catalog import Plan
from billing_gql.core.checkout import Checkout
from billing_gql.core.subscriptions import Subscription, subscription_from_row
from billing_gql.entitlements import checks as entitlement_checks
from billing_gql.entitlements.service import Entitlement
from billing_gql.graphql.context import Info
from billing_gql.graphql.loaders import by_key, group_by, loader
from billing_gql.graphql.pages import MAX_PAGE
from billing_gql.subscriptions.service import load_subscriptions

__all__ = [
    "load_checkout",
    "load_customer_entitlements",
    "load_customer_subscriptions",
    "load_open_push_checkout",
    "load_paid_renewal",
    "load_plan",
    "load_subscription",
]


async def load_plan(info: Info, plan_id: UUID) -> Plan | None:
    async def batch(ids: Sequence[UUID]) -> list[Plan | None]:
        found = await load_plans(info.context.runtime.db.pool, ids=list(ids))
        return by_key(found, ids, lambda p: p.id)

    return await loader(info, "catalog.plan", batch).load(plan_id)


async def load_checkout(info: Info, checkout_id: UUID) -> Checkout | None:
    async def batch(ids: Sequence[UUID]) -> list[Checkout | None]:
        found = await load_checkouts(info.context.runtime.db.pool, ids)
        return by_key(found, ids, lambda c: c.id)

    return await loader(info, "checkout.by_id", batch).load(checkout_id)


async def load_subscription(info: Info, subscription_id: UUID) -> Subscription | None:
    async def batch(ids: Sequence[UUID]) -> list[Subscription | None]:
        found = await load_subscriptions(info.context.runtime.db.pool, ids)
        return by_key(found, ids, lambda s: s.id)

    return await loader(info, "subscriptions.by_id", batch).load(subscription_id)


async def load_customer_subscriptions(info: Info, customer_id: UUID) -> list[Subscription]:
    """A customer's newest subscriptions, newest first: at most ``MAX_PAGE`` (the most
    ``Customer.subscriptions(first:)`` shows), however many the customer has."""

    async def batch(ids: Sequence[UUID]) -> list[list[Subscription]]:
        rows = await info.context.runtime.db.fetch(
            "SELECT s.* FROM unnest($1::uuid[]) AS c(id) CROSS JOIN LATERAL ("
            "SELECT * FROM subscriptions WHERE customer_id = c.id "
            "ORDER BY created_at DESC, id DESC LIMIT $2) s "
            "ORDER BY s.customer_id, s.created_at DESC, s.id DESC",
            list(ids),
            MAX_PAGE,
        )
        return group_by([subscription_from_row(r) for r in rows], ids, lambda s: s.customer_id)

    return await loader(info, "subscriptions.by_customer", batch).load(customer_id)


async def load_open_push_checkout(info: Info, subscription_id: UUID) -> Checkout | None:
    async def batch(ids: Sequence[UUID]) -> list[Checkout | None]:
        found = await open_push_checkouts(info.context.runtime.db.pool, ids)
        return [found.get(i) for i in ids]

    return await loader(info, "push_renewals.open_checkout", batch).load(subscription_id)


async def load_paid_renewal(info: Info, subscription_id: UUID) -> Checkout | None:
    async def batch(ids: Sequence[UUID]) -> list[Checkout | None]:
        found = await paid_renewals(info.context.runtime.db.pool, ids)
        return [found.get(i) for i in ids]

    return await loader(info, "push_renewals.paid_renewal", batch).load(subscription_id)


async def load_customer_entitlements(info: Info, customer_id: UUID) -> list[Entitlement]:
    runtime = info.context.runtime

    async def batch(ids: Sequence[UUID]) -> list[list[Entitlement]]:
        found = await entitlement_checks.check_all(runtime, ids)
        return [found.get(i, []) for i in ids]

    return await loader(info, "entitlements.by_customer", batch).load(customer_id)
