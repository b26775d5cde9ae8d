"""Forwarding usage to a provider that bills it: the outbox, retries with backoff, rejections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from billing_helpers import Rows, make_customer, meter, record

from billing_gql import (
    BillingEvent,
    CheckoutRequest,
    CheckoutSession,
    NotSupported,
    Provider,
    ProviderUnavailable,
    StoredDelivery,
    UsageRecord,
    UsageReportResult,
    WebhookEnvelope,
    WebhookRequest,
    WebhookSignatureError,
    hookimpl,
)
from billing_gql.runtime import Runtime
from billing_gql.settings import BillingSettings, Settings
from billing_gql.testing import TestDatabase
from billing_gql.testing.fixtures import MakeApi
from billing_gql.usage.forwarding import forward_usage, next_forward_attempt

NOW = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)


class MeteredPlugin:
    """A provider that bills usage, deduplicating on the event id as Polar and Stripe do.

    ``outcomes`` scripts its answers: ``"down"`` raises ProviderUnavailable, ``"lost"`` stores
    the records and then raises (the answer was lost on the way back), ``"ok"`` answers.
    """

    def __init__(self, outcomes: Sequence[str], reject: Sequence[str] = ()) -> None:
        self.outcomes = list(outcomes)
        self.reject = set(reject)
        self.calls: list[list[UsageRecord]] = []
        self.billed: dict[str, UsageRecord] = {}

    @hookimpl
    def register_providers(self) -> Sequence[type[Provider]]:
        plugin = self

        class Metered(Provider):
            name = "metered"
            display_name = "Metered"
            needs_provider_ref = False

            async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
                raise NotSupported("usage only")

            def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
                raise WebhookSignatureError("no webhooks")

            async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
                return []

            async def report_usage(self, records: Sequence[UsageRecord]) -> UsageReportResult:
                plugin.calls.append(list(records))
                outcome = plugin.outcomes.pop(0) if plugin.outcomes else "ok"
                if outcome == "down":
                    raise ProviderUnavailable("503 from the fake", status=503)
                taken = [r for r in records if r.event_id not in plugin.reject]
                for r in taken:
                    plugin.billed.setdefault(r.event_id, r)
                if outcome == "lost":
                    raise ProviderUnavailable("connection reset after the write")
                return UsageReportResult(
                    accepted=len(taken),
                    rejected={
                        r.event_id: "unknown event name"
                        for r in records
                        if r.event_id in plugin.reject
                    },
                )

        return [Metered]


@asynccontextmanager
async def worker_runtime(settings: Settings, plugin: MeteredPlugin) -> AsyncIterator[Runtime]:
    """A runtime of its own on the test's event loop, as the worker process has (the test
    client serves the app from another loop)."""
    runtime = await Runtime.start(settings, extra_plugins=[plugin], apply_migrations=False)
    try:
        yield runtime
    finally:
        await runtime.close()


async def outbox(rows: Rows) -> list[dict[str, Any]]:
    found = await rows.execute(
        "SELECT provider, event_id, status, attempts, next_attempt_at, last_error "
        "FROM usage_outbox ORDER BY provider, event_id"
    )
    return [dict(r) for r in found]


def ev(i: str, cid: str, m: str, value: str = "1") -> dict[str, Any]:
    return {
        "id": i,
        "customerId": cid,
        "meter": m,
        "value": value,
        "timestamp": "2026-09-01T11:00:00Z",
        "properties": {"model": "m1"},
    }


async def test_outbox_retries_with_backoff_until_accepted(
    make_api: MakeApi, clean_database: TestDatabase, app_settings: Settings
) -> None:
    rows = Rows(clean_database)
    await rows.set_clock(NOW)
    plugin = MeteredPlugin(outcomes=["down", "down", "ok"], reject=["t3"])
    billing = BillingSettings(test_clock=True, manual_provider=True)
    settings = replace(app_settings, billing=billing)
    async with (
        make_api(plugins=[plugin], billing=billing) as api,
        worker_runtime(settings, plugin) as runtime,
    ):
        cid = await make_customer(api, "acme")
        # Refs at a provider that takes no usage (manual) or is not configured (stripe) queue
        # nothing; a meter without refs queues nothing.
        await meter(
            api,
            "tokens",
            "SUM",
            refs=[
                {"provider": "metered", "ref": "tokens_used"},
                {"provider": "manual", "ref": "x"},
                {"provider": "stripe", "ref": "mtr_1"},
            ],
        )
        await meter(api, "calls")
        await record(
            api,
            [
                ev("t1", cid, "tokens", "1200"),
                ev("t2", cid, "tokens", "30"),
                ev("t3", cid, "tokens", "5"),
                ev("c1", cid, "calls"),
            ],
        )
        queued = await outbox(rows)
        assert [(r["provider"], r["event_id"], r["status"]) for r in queued] == [
            ("metered", "t1", "pending"),
            ("metered", "t2", "pending"),
            ("metered", "t3", "pending"),
        ]
        # A duplicate batch queues nothing more.
        assert (await record(api, [ev("t1", cid, "tokens", "1200")]))["duplicates"] == 1
        assert len(await outbox(rows)) == 3

        # 1st attempt: the provider is down; retry in 30 s.
        assert await forward_usage(runtime, NOW) == 0
        after_first = await outbox(rows)
        assert {r["attempts"] for r in after_first} == {1}
        assert {r["next_attempt_at"] for r in after_first} == {NOW + timedelta(seconds=30)}
        assert {r["status"] for r in after_first} == {"pending"}
        assert "503" in after_first[0]["last_error"]
        # Not due yet: the provider is not called.
        assert await forward_usage(runtime, NOW + timedelta(seconds=29)) == 0
        assert len(plugin.calls) == 1
        # 2nd attempt fails too; the wait doubles.
        second = NOW + timedelta(seconds=30)
        assert await forward_usage(runtime, second) == 0
        assert {r["next_attempt_at"] for r in await outbox(rows)} == {
            second + timedelta(seconds=60)
        }
        assert await next_forward_attempt(runtime, second) == second + timedelta(seconds=60)
        # 3rd attempt: accepted, except the one the provider refused for good (all 3 settled).
        third = second + timedelta(seconds=60)
        assert await forward_usage(runtime, third) == 3
        settled = await outbox(rows)
        assert [(r["event_id"], r["status"], r["attempts"]) for r in settled] == [
            ("t1", "accepted", 3),
            ("t2", "accepted", 3),
            ("t3", "rejected", 3),
        ]
        assert settled[2]["last_error"] == "unknown event name"
        assert settled[0]["last_error"] is None
        # Nothing is left to send.
        assert await forward_usage(runtime, third + timedelta(days=1)) == 0
        assert await next_forward_attempt(runtime, third) is None
        assert len(plugin.calls) == 3

    sent = {r.event_id: r for r in plugin.calls[-1]}
    assert set(sent) == {"t1", "t2", "t3"}
    t1 = sent["t1"]
    assert t1.provider_event_name == "tokens_used"
    assert t1.meter_code == "tokens"
    assert t1.value == Decimal(1200)
    assert t1.timestamp == datetime(2026, 9, 1, 11, 0, tzinfo=UTC)
    assert t1.customer.external_id == "acme" and t1.customer.id == cid
    assert dict(t1.properties) == {"model": "m1"}


async def test_repeated_and_concurrent_batches_queue_each_event_once(
    make_api: MakeApi, clean_database: TestDatabase
) -> None:
    """The outbox rows come from the same statement as the events, on both insert paths: a
    batch holding stored ids (the plain insert refused, the idempotent one queueing only the
    new events) and copies of a batch in flight together."""
    rows = Rows(clean_database)
    await rows.set_clock(NOW)
    billing = BillingSettings(test_clock=True)
    async with make_api(plugins=[MeteredPlugin(outcomes=[])], billing=billing) as api:
        cid = await make_customer(api, "acme")
        await meter(api, "tokens", "SUM", refs=[{"provider": "metered", "ref": "tokens_used"}])
        events = [ev(f"t{i}", cid, "tokens", str(i)) for i in range(60)]
        assert (await record(api, events[:10]))["accepted"] == 10
        assert await record(api, events[:20]) == {
            "accepted": 10,
            "duplicates": 10,
            "userErrors": [],
        }
        assert len(await outbox(rows)) == 20
        results = await asyncio.gather(*(record(api, events) for _ in range(4)))
        assert sum(r["accepted"] for r in results) == 40
        assert sum(r["duplicates"] for r in results) == 4 * 60 - 40
        queued = await outbox(rows)
    assert sorted(r["event_id"] for r in queued) == sorted(e["id"] for e in events)
    assert {(r["provider"], r["status"]) for r in queued} == {("metered", "pending")}


async def test_a_lost_answer_is_retried_and_billed_once(
    make_api: MakeApi, clean_database: TestDatabase, app_settings: Settings
) -> None:
    rows = Rows(clean_database)
    await rows.set_clock(NOW)
    plugin = MeteredPlugin(outcomes=["lost", "ok"])
    billing = BillingSettings(test_clock=True)
    async with (
        make_api(plugins=[plugin], billing=billing) as api,
        worker_runtime(replace(app_settings, billing=billing), plugin) as runtime,
    ):
        cid = await make_customer(api, "acme")
        await meter(api, "tokens", "SUM", refs=[{"provider": "metered", "ref": "tokens_used"}])
        await record(api, [ev(f"t{i}", cid, "tokens", "2") for i in range(4)])
        assert await forward_usage(runtime, NOW) == 0
        assert len(plugin.billed) == 4  # the provider did take them
        assert await forward_usage(runtime, NOW + timedelta(seconds=30)) == 4
    # The retry resent every record with the same ids; the provider kept one of each.
    assert [len(c) for c in plugin.calls] == [4, 4]
    assert sum(r.value for r in plugin.billed.values()) == Decimal(8)


async def test_backoff_is_capped(
    make_api: MakeApi, clean_database: TestDatabase, app_settings: Settings
) -> None:
    rows = Rows(clean_database)
    await rows.set_clock(NOW)
    plugin = MeteredPlugin(outcomes=["down"] * 12)
    billing = BillingSettings(test_clock=True)
    async with (
        make_api(plugins=[plugin], billing=billing) as api,
        worker_runtime(replace(app_settings, billing=billing), plugin) as runtime,
    ):
        cid = await make_customer(api, "acme")
        await meter(api, "tokens", "SUM", refs=[{"provider": "metered", "ref": "tokens_used"}])
        await record(api, [ev("t1", cid, "tokens")])
        now = NOW
        waits = []
        for _ in range(9):
            await forward_usage(runtime, now)
            due = (await outbox(rows))[0]["next_attempt_at"]
            waits.append(int((due - now).total_seconds()))
            now = due
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


async def test_worker_sweeps_forward_usage(make_api: MakeApi, clean_database: TestDatabase) -> None:
    """The worker's sweep registry forwards queued usage: advancing the test clock runs it,
    retrying past an outage."""
    rows = Rows(clean_database)
    await rows.set_clock(NOW)
    plugin = MeteredPlugin(outcomes=["down"])
    billing = BillingSettings(test_clock=True, manual_provider=True)
    async with make_api(plugins=[plugin], billing=billing) as api:
        cid = await make_customer(api, "acme")
        await meter(api, "tokens", "SUM", refs=[{"provider": "metered", "ref": "tokens_used"}])
        await record(api, [ev("t1", cid, "tokens", "7")])
        advanced = await api.admin(
            'mutation { advanceClock(to: "2026-09-01T12:05:00Z") { now userErrors { code } } }'
        )
        assert advanced["advanceClock"]["now"] == "2026-09-01T12:05:00Z"
    assert [(r["event_id"], r["status"]) for r in await outbox(rows)] == [("t1", "accepted")]
    assert len(plugin.calls) == 2 and plugin.billed["t1"].value == Decimal("7")
