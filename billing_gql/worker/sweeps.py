"""Due work: the sweeps the worker's tick (and ``advanceClock``) runs against the billing clock.

A **sweep** finds what fell due at ``now`` by scanning the database and handles it, returning
how many items it handled. Every sweep is idempotent and safe to run in several processes at
once: it claims rows with ``FOR UPDATE SKIP LOCKED`` or changes them with a conditional
``UPDATE … WHERE status = …``, so two workers never handle one item twice.

:data:`SWEEPS` is the explicit, ordered registry; domains add theirs here (not by import side
effects), e.g. the usage forwarder and the provider-webhook retry. :data:`DUE_TIMES` lists, for
the billing sweeps, when their next item falls due, so :func:`advance_clock` can stop the test
clock at each such moment in order (a renewal is issued, then the period ends, then the grace
period runs out) instead of jumping over them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from billing_gql import metrics
from billing_gql.access.rate_limits import delete_stale_counters
from billing_gql.checkout.usage_billing import close_usage_periods
from billing_gql.customers.service import delete_expired_sessions
from billing_gql.events.outgoing_webhooks import deliver_due_messages
from billing_gql.invoices.service import void_due_invoices
from billing_gql.provider_webhooks.apply import apply_due_deliveries, next_delivery_attempt
from billing_gql.subscriptions.reconcile import reconcile_due
from billing_gql.usage.forwarding import forward_usage, next_forward_attempt
from billing_gql.usage.partitions import create_partitions, drop_expired_partitions
from billing_gql.usage.rollups import compact_rollups
from billing_gql.worker import billing

if TYPE_CHECKING:
    from billing_gql.context import ServiceContext

log = logging.getLogger(__name__)

Sweep = Callable[["ServiceContext", datetime], Awaitable[int]]
"""Handles what is due at ``now``; returns the number of items handled."""

DueTime = Callable[["ServiceContext", datetime], Awaitable[datetime | None]]
"""The earliest moment strictly after ``now`` at which the sweep will have something to do."""


def _registry() -> tuple[tuple[str, Sweep], ...]:
    return (
        # The usage table's monthly partitions for this month and the next ones exist before
        # anything records usage at this clock time.
        ("create_usage_partitions", create_partitions),
        # First: provider events that failed to apply (a renewal paid by bank transfer must
        # count before the period-end sweep looks at the subscription).
        ("apply_webhook_deliveries", apply_due_deliveries),
        # Then money a missed webhook would have brought, for the same reason.
        ("reconcile_providers", reconcile_due),
        # Before anything moves a push subscription out of a period that ended: its usage is
        # billed in arrears (added to the open renewal, else a checkout of its own).
        ("close_usage_periods", close_usage_periods),
        ("apply_pending_plans", billing.apply_pending_plans),
        # A period paid ahead starts before the period-end sweep looks for unpaid ones.
        ("start_paid_periods", billing.start_paid_periods),
        ("end_periods", billing.end_periods),
        # Before the checkout expiry: a lapsed subscription takes its renewal checkout with it
        # (the renewal expires at the grace end too), and is not issued a fresh one.
        ("expire_past_due", billing.expire_past_due),
        ("expire_checkouts", billing.expire_checkouts),
        # The invoices of checkouts that expired or failed (here or in the sweeps above).
        ("void_invoices", void_due_invoices),
        ("issue_renewals", billing.issue_renewals),
        # Usage the providers bill (Polar events, Stripe meter events), retried until taken.
        ("forward_usage", forward_usage),
        # Session tokens past their expiry (they already authorize nothing).
        ("delete_expired_sessions", delete_expired_sessions),
        # Rate-limit counters of windows long gone (client addresses come and go).
        ("delete_stale_rate_limits", delete_stale_counters),
        # One row per (customer, meter, hour) in the usage rollups (ingestion appends rows).
        ("compact_usage_rollups", compact_rollups),
        # Raw usage months past BILLING_GQL_USAGE_RETENTION_MONTHS whose periods are invoiced
        # (after the period-end sweeps above moved subscriptions into their next period).
        ("drop_expired_usage_partitions", drop_expired_partitions),
        # Last, so the events the sweeps above emitted go out in the same tick.
        ("deliver_webhooks", deliver_due_messages),
    )


SWEEPS: Sequence[tuple[str, Sweep]] = _registry()
"""The sweeps, in the order each tick runs them."""


def _due_times() -> tuple[DueTime, ...]:
    return (
        billing.next_checkout_expiry,
        billing.next_subscription_moment,
        next_forward_attempt,
        # A provider delivery that failed to apply is retried at its own time, before what
        # falls due after it (a late renewal payment must count before the period ends).
        next_delivery_attempt,
    )


DUE_TIMES: Sequence[DueTime] = _due_times()
"""When the billing sweeps next have work (the test clock stops at each such moment)."""

MAX_PASSES = 20
"""Bound on the passes one :func:`run_until_idle` makes (a sweep that keeps finding work)."""


async def run_due_work(runtime: ServiceContext) -> dict[str, int]:
    """Run every sweep once, in order, at the clock's now; return what each handled.

    A failing sweep is logged and reported as 0; the others still run, and the next tick
    retries it.
    """
    now = await runtime.clock.now()
    done: dict[str, int] = {}
    for name, sweep in SWEEPS:
        try:
            done[name] = await sweep(runtime, now)
        except Exception:
            log.exception("sweep %s failed", name)
            metrics.count_sweep_failure(name)
            done[name] = 0
    return done


async def run_until_idle(runtime: ServiceContext) -> dict[str, int]:
    """Run :func:`run_due_work` until a pass finds nothing (at most :data:`MAX_PASSES`)."""
    total: dict[str, int] = {}
    for _ in range(MAX_PASSES):
        done = await run_due_work(runtime)
        for name, count in done.items():
            total[name] = total.get(name, 0) + count
        if not any(done.values()):
            break
    return total


async def next_due(runtime: ServiceContext, now: datetime) -> datetime | None:
    """The earliest moment after ``now`` at which billing work falls due, if any."""
    moments = [m for due in DUE_TIMES if (m := await due(runtime, now)) is not None]
    return min(moments, default=None)


MAX_STEPS = 1000
"""Bound on the stops one :func:`advance_clock` makes on its way."""

_ADVANCE_LOCK = 0x6267_636C  # "bgcl": serializes advanceClock calls


async def advance_clock(runtime: ServiceContext, to: datetime) -> datetime:
    """Move the test clock to ``to``, running the work that falls due on the way, in order.

    The clock stops at every moment something falls due (a checkout expires, a renewal is due,
    a period or a grace period ends) and runs the sweeps there, so each change happens at its
    own time. Raises :class:`~billing_gql.errors.UserInputError` when the test clock is off or
    ``to`` is in the past.
    """
    async with runtime.db.acquire() as conn:
        # One advance at a time (across processes): two interleaved walks would run each
        # other's stops out of order.
        await conn.execute("SELECT pg_advisory_lock($1)", _ADVANCE_LOCK)
        try:
            now = await runtime.clock.check_advance(to)
            await run_until_idle(runtime)
            for _ in range(MAX_STEPS):
                moment = await next_due(runtime, now)
                if moment is None or moment > to:
                    break
                now = await runtime.clock.advance(moment)
                await run_until_idle(runtime)
            now = await runtime.clock.advance(to)
            await run_until_idle(runtime)
            return now
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _ADVANCE_LOCK)
