"""The clock service: the only source of "now" for billing logic.

In production it is the wall clock. With ``BILLING_GQL_TEST_CLOCK=1`` time is frozen in the
database (``clock_state``), shared by every process on it, and moves only when an admin calls
``advanceClock`` — so a month of renewals runs in a test in seconds, and proration in tests is
exact to the second.
"""

from __future__ import annotations

from datetime import UTC, datetime

from billing_gql.db.database import Database
from billing_gql.errors import UserInputError

__all__ = ["Clock"]


def wall_now() -> datetime:
    """The real UTC time."""
    return datetime.now(UTC)


class Clock:
    """Billing time: the wall clock, or the stored test clock."""

    def __init__(self, db: Database, *, test_clock: bool = False) -> None:
        self.db = db
        self.test_clock = test_clock

    async def now(self) -> datetime:
        """The current billing time (UTC)."""
        if not self.test_clock:
            return wall_now()
        value = await self.db.fetchval("SELECT now FROM clock_state WHERE id = 1")
        if value is None:
            start = wall_now().replace(microsecond=0)
            value = await self.db.fetchval(
                "INSERT INTO clock_state (id, now) VALUES (1, $1) "
                "ON CONFLICT (id) DO UPDATE SET now = clock_state.now RETURNING now",
                start,
            )
        assert isinstance(value, datetime)
        return value.astimezone(UTC)

    async def check_advance(self, to: datetime) -> datetime:
        """Validate a move of the test clock to ``to`` without moving it; return the current time.

        Raises ``FEATURE_DISABLED`` when the test clock is off, ``INVALID_INPUT`` (field
        ``["to"]``) for a naive time or one before now.
        """
        if not self.test_clock:
            raise UserInputError(
                "FEATURE_DISABLED", "the test clock is off (BILLING_GQL_TEST_CLOCK)"
            )
        if to.tzinfo is None:
            raise UserInputError("INVALID_INPUT", "the time must carry a UTC offset", ["to"])
        current = await self.now()
        if to < current:
            raise UserInputError(
                "INVALID_INPUT", f"the clock cannot go back (it is {current.isoformat()})", ["to"]
            )
        return current

    async def advance(self, to: datetime) -> datetime:
        """Move the test clock forward to ``to`` (never back) and return the new time."""
        await self.check_advance(to)
        value = await self.db.fetchval(
            "UPDATE clock_state SET now = GREATEST(now, $1) WHERE id = 1 RETURNING now", to
        )
        assert isinstance(value, datetime)
        return value.astimezone(UTC)
