"""``checkoutUpdated``: a checkout's current state, then every change, until it is terminal.

Fed by the checkout listener (:mod:`billing_gql.events.notify`): a change committed by any
server process wakes the subscription, which re-reads the row and sends it when it differs
from what it sent last (wake-ups that change nothing send nothing; quick successive changes
may arrive as their latest state).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from billing_gql.checkout.service import get_checkout
from billing_gql.core.checkout import Checkout as CheckoutModel
from billing_gql.core.scopes import Scope
from billing_gql.customers.service import parse_uuid
from billing_gql.events.notify import checkout_listener
from billing_gql.graphql import typed
from billing_gql.graphql.auth import require_customer, require_viewer
from billing_gql.graphql.context import Context, Info
from billing_gql.graphql.errors import ApiError, GraphQLErrorCode
from billing_gql.graphql.types.checkout import Checkout

TERMINAL = frozenset({"COMPLETED", "EXPIRED", "FAILED"})


class NotFound(ApiError):
    code = GraphQLErrorCode.NOT_FOUND


async def _updates(context: Context, first: CheckoutModel) -> AsyncGenerator[Checkout, None]:
    runtime = context.runtime
    async with checkout_listener(runtime).watch(str(first.id)) as watch:
        # LISTEN is active now: read again, so no change after this read can be missed.
        current = await get_checkout(runtime.db.pool, first.id)
        sent: CheckoutModel | None = None
        while current is not None:
            if current != sent:
                # Related objects (the subscription it created) must be read afresh.
                context.loaders.clear()
                yield Checkout(model=current)
                sent = current
            if current.status in TERMINAL:
                return
            await watch.wait()
            current = await get_checkout(runtime.db.pool, first.id)


@strawberry.type
class CheckoutSubscription:
    @typed.field(
        scope=Scope.READ,
        description="Admin, or the checkout's own customer. The checkout now, then every "
        "change, from any server process; completes at COMPLETED, EXPIRED or FAILED.",
        is_subscription=True,
    )
    async def checkout_updated(
        self, info: Info, checkout_id: strawberry.ID
    ) -> AsyncGenerator[Checkout, None]:
        require_viewer(info)
        uid = parse_uuid(checkout_id)
        found = await get_checkout(info.context.runtime.db.pool, uid) if uid else None
        require_customer(info, found.customer_id if found else None)
        if found is None:
            raise NotFound("no such checkout")
        return _updates(info.context, found)
