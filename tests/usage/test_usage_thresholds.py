"""Metered entitlements and usage.threshold_crossed, through GraphQL over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from billing_helpers import (
    ENTITLEMENTS,
    Rows,
    checkout_ok,
    complete,
    entitlement,
    make_customer,
    make_plan,
    meter,
    record,
    subscribe,
)

from billing_gql import DomainEvent, hookimpl
from billing_gql.settings import BillingSettings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql.testing.fixtures import MakeApi

NOW = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)


class Observer:
    """An observer plugin collecting the domain events the app emits."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    @hookimpl
    def on_billing_event(self, event: DomainEvent) -> None:
        if event.type == "usage.threshold_crossed":
            self.events.append(event)

    def crossed(self) -> list[tuple[str, int, str]]:
        return [(e.data["feature"], e.data["threshold"], e.data["used"]) for e in self.events]


@pytest.fixture
def observer() -> Observer:
    return Observer()


@pytest.fixture
async def api(
    make_api: MakeApi, clean_database: TestDatabase, observer: Observer
) -> AsyncIterator[ApiClient]:
    await Rows(clean_database).set_clock(NOW)
    billing = BillingSettings(test_clock=True, manual_provider=True)
    async with make_api(plugins=[observer], billing=billing) as client:
        yield client


def calls(prefix: str, n: int, customer_id: str) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i}", "customerId": customer_id, "meter": "api_calls"} for i in range(n)
    ]


async def setup(api: ApiClient, limit: str = "100") -> str:
    await meter(api, "api_calls")
    await make_plan(
        api, "pro", features=[{"feature": "api_calls", "limit": limit}, {"feature": "sso"}]
    )
    customer_id = await make_customer(api, "acme")
    await subscribe(api, customer_id, "pro", currency="USD")
    return customer_id


async def test_metered_entitlement_used_remaining_and_cutoff(
    api: ApiClient, observer: Observer
) -> None:
    cid = await setup(api)
    assert await entitlement(api, cid, "api_calls") == {
        "feature": "api_calls",
        "enabled": True,
        "limit": "100",
        "used": "0",
        "remaining": "100",
    }
    await record(api, calls("a", 79, cid))
    assert await entitlement(api, cid, "api_calls") == {
        "feature": "api_calls",
        "enabled": True,
        "limit": "100",
        "used": "79",
        "remaining": "21",
    }
    assert observer.crossed() == []

    await record(api, calls("b", 1, cid))
    assert observer.crossed() == [("api_calls", 80, "80")]
    event = observer.events[0].data
    assert event["customerId"] == cid and event["externalCustomerId"] == "acme"
    assert event["limit"] == "100" and event["meter"] == "api_calls"

    await record(api, calls("c", 19, cid))
    assert observer.crossed() == [("api_calls", 80, "80")]
    assert (await entitlement(api, cid, "api_calls"))["enabled"] is True

    await record(api, calls("d", 1, cid))
    assert await entitlement(api, cid, "api_calls") == {
        "feature": "api_calls",
        "enabled": False,
        "limit": "100",
        "used": "100",
        "remaining": "0",
    }
    assert observer.crossed() == [("api_calls", 80, "80"), ("api_calls", 100, "100")]

    await record(api, calls("e", 5, cid))
    over = await entitlement(api, cid, "api_calls")
    assert (over["used"], over["remaining"], over["enabled"]) == ("105", "0", False)
    assert len(observer.events) == 2
    # Duplicates add nothing and announce nothing.
    await record(api, calls("e", 5, cid))
    assert (await entitlement(api, cid, "api_calls"))["used"] == "105"
    assert len(observer.events) == 2

    # The list form agrees; a feature that is not a meter uses nothing.
    listed = (await api.admin(ENTITLEMENTS, {"c": cid}))["entitlements"]
    assert {e["feature"]: (e["used"], e["enabled"]) for e in listed} == {
        "api_calls": ("105", False),
        "sso": ("0", True),
    }


async def test_concurrent_batches_announce_each_threshold_once(
    api: ApiClient, observer: Observer
) -> None:
    cid = await setup(api)
    await asyncio.gather(*(record(api, calls(f"p{k}-", 30, cid)) for k in range(4)))
    assert (await entitlement(api, cid, "api_calls"))["used"] == "120"
    assert sorted(t for _, t, _ in observer.crossed()) == [80, 100]


async def test_a_batch_mixing_stored_and_new_events_counts_only_the_new(
    api: ApiClient, observer: Observer
) -> None:
    """The stored events make the plain insert refuse the batch; the idempotent insert stores
    the new ones, and the thresholds see exactly those."""
    cid = await setup(api, limit="10")
    await record(api, calls("a", 7, cid))
    assert observer.crossed() == []
    payload = await record(api, calls("a", 7, cid) + calls("b", 3, cid))
    assert (payload["accepted"], payload["duplicates"]) == (3, 7)
    assert (await entitlement(api, cid, "api_calls"))["used"] == "10"
    assert sorted(observer.crossed()) == [("api_calls", 80, "10"), ("api_calls", 100, "10")]
    payload = await record(api, calls("a", 7, cid) + calls("b", 3, cid))
    assert (payload["accepted"], payload["duplicates"]) == (0, 10)
    assert len(observer.events) == 2


async def test_thresholds_reset_with_the_period(
    api: ApiClient, observer: Observer, clean_database: TestDatabase
) -> None:
    cid = await setup(api, limit="10")
    await record(api, calls("a", 9, cid))
    assert observer.crossed() == [("api_calls", 80, "9")]
    rows = Rows(clean_database)
    # The next period (as a renewal would set it): usage starts again from zero.
    nxt = datetime(2026, 11, 5, 9, 0, tzinfo=UTC)
    await rows.execute(
        "UPDATE subscriptions SET current_period_start = $1, current_period_end = $2",
        nxt,
        datetime(2026, 12, 5, 9, 0, tzinfo=UTC),
    )
    await rows.set_clock(nxt)
    assert (await entitlement(api, cid, "api_calls"))["used"] == "0"
    await record(api, calls("b", 8, cid))
    assert [t for _, t, _ in observer.crossed()] == [80, 80]
    assert observer.events[1].data["periodStart"] == nxt.isoformat()
    # A late event for the old period counts there, not in the current one.
    await record(
        api,
        [
            {
                "id": "late",
                "customerId": cid,
                "meter": "api_calls",
                "timestamp": "2026-10-20T00:00:00Z",
            }
        ],
    )
    assert (await entitlement(api, cid, "api_calls"))["used"] == "8"


async def test_a_one_time_grant_counts_thresholds_in_the_calendar_month(
    api: ApiClient, observer: Observer
) -> None:
    """With no subscription period (a ONE_TIME purchase grants the limit), used and the
    thresholds' period are the current UTC calendar month."""
    await meter(api, "api_calls")
    await make_plan(
        api, "pack", interval="ONE_TIME", features=[{"feature": "api_calls", "limit": "5"}]
    )
    cid = await make_customer(api, "acme")
    checkout = await checkout_ok(api, customerId=cid, planCode="pack", provider="manual")
    assert (await complete(api, checkout["id"]))["status"] == "COMPLETED"
    await record(api, calls("a", 5, cid))
    assert (await entitlement(api, cid, "api_calls"))["used"] == "5"
    assert observer.crossed() == [("api_calls", 80, "5"), ("api_calls", 100, "5")]
    assert {(e.data["periodStart"], e.data["periodEnd"]) for e in observer.events} == {
        ("2026-10-01T00:00:00+00:00", "2026-11-01T00:00:00+00:00")
    }
