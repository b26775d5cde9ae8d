"""The test clock's GraphQL face: ``advanceClock`` (admin; ``BILLING_GQL_TEST_CLOCK=1``)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from billing_gql.core.scopes import Scope
from billing_gql.errors import UserInputError
from billing_gql.graphql import typed
from billing_gql.graphql.auth import require_admin
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import UserError, user_errors
from billing_gql.worker.sweeps import advance_clock


@strawberry.type
class ClockPayload:
    now: datetime | None = strawberry.field(description="The billing time after the move.")
    user_errors: list[UserError]


@strawberry.type
class ClockMutation:
    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin; BILLING_GQL_TEST_CLOCK=1. Move billing time forward to `to` (never "
        "back), running every renewal, expiry and grace period that falls due on the way, in "
        "order.",
    )
    async def advance_clock(self, info: Info, to: datetime) -> ClockPayload:
        require_admin(info)
        try:
            now = await advance_clock(info.context.runtime, to)
        except UserInputError as exc:
            return ClockPayload(now=None, user_errors=user_errors(exc))
        return ClockPayload(now=now, user_errors=[])
