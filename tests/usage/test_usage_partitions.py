"""The partitioned usage store: monthly partitions created ahead by the worker's sweeps (events
stored in the default partition before their month's partition existed move into it), and
retention (``BILLING_GQL_USAGE_RETENTION_MONTHS``) dropping raw months once their periods are
invoiced, driven by the test clock through ``advanceClock``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from billing_helpers import (
    CANCEL,
    Rows,
    advance,
    make_customer,
    manual_clock,
    meter,
    record,
    subscribe,
    usage,
    usd_plan_id,
)

from billing_gql.settings import BillingSettings, Settings, SettingsError
from billing_gql.testing.fixtures import MakeApi

NOW = datetime(2039, 1, 10, 12, 0, tzinfo=UTC)
JANUARY = {"from": "2039-01-01T00:00:00Z", "to": "2039-02-01T00:00:00Z"}


async def partitions(rows: Rows, year: int = 2039) -> dict[str, int]:
    """Each monthly partition of ``year`` and how many events it holds (each test uses a year
    of its own: partitions outlive the per-test emptying of the tables)."""
    found = await rows.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'usage_events'::regclass AND c.relname LIKE $1",
        f"usage_events_p{year}%",
    )
    counts = {}
    for r in found:
        counted = await rows.execute(f"SELECT count(*) AS n FROM {r['relname']}")
        counts[str(r["relname"])] = int(counted[0]["n"])
    return counts


async def test_partitions_are_created_ahead_and_take_their_waiting_events(
    make_api: MakeApi, rows: Rows
) -> None:
    await rows.set_clock(NOW)
    async with make_api(billing=BillingSettings(test_clock=True)) as api:
        cid = await make_customer(api, "acme")
        await meter(api, "tokens", "SUM")
        # No sweep has run at this clock time yet: the events wait in the default partition.
        events = [
            {
                "id": f"e{i}",
                "customerId": cid,
                "meter": "tokens",
                "value": "2",
                "timestamp": f"2039-01-0{1 + i}T10:30:00Z",
            }
            for i in range(4)
        ]
        assert (await record(api, events))["accepted"] == 4
        assert "usage_events_p2039_01" not in await partitions(rows)
        assert (await rows.execute("SELECT count(*) AS n FROM usage_events_default"))[0]["n"] == 4

        await advance(api, datetime(2039, 1, 10, 13, 0, tzinfo=UTC))
        made = await partitions(rows)
        assert [made.get(f"usage_events_p2039_0{m}") for m in (1, 2, 3)] == [4, 0, 0]
        assert (await rows.execute("SELECT count(*) AS n FROM usage_events_default"))[0]["n"] == 0
        # Nothing lost or counted twice by the move; ids still refuse repeats.
        assert (await usage(api, "tokens", c=cid, **JANUARY))["value"] == "8"
        assert await record(api, events) == {"accepted": 0, "duplicates": 4, "userErrors": []}

        # Ahead as the clock moves: two months after the clock's month.
        await advance(api, datetime(2039, 3, 2, tzinfo=UTC))
        assert set(await partitions(rows)) >= {
            "usage_events_p2039_04",
            "usage_events_p2039_05",
        }


async def test_retention_drops_raw_months_once_their_periods_are_invoiced(
    make_api: MakeApi, rows: Rows
) -> None:
    await rows.set_clock(NOW.replace(year=2041))
    async with make_api(billing=manual_clock(usage_retention_months=1)) as api:
        await meter(api, "tokens", "SUM")
        await usd_plan_id(api, "monthly")
        await usd_plan_id(api, "yearly", interval="YEAR")
        monthly = await make_customer(api, "monthly")
        yearly = await make_customer(api, "yearly")
        await subscribe(api, monthly, "monthly")  # Jan 10 - Feb 10, never renewed: expires
        long_sub = await subscribe(api, yearly, "yearly")  # Jan 10 2041 - Jan 10 2042
        events = [
            {
                "id": f"{who}-{i}",
                "customerId": cid,
                "meter": "tokens",
                "value": "5",
                "timestamp": f"2041-01-0{1 + i}T08:00:00Z",
            }
            for who, cid in (("m", monthly), ("y", yearly))
            for i in range(3)
        ]
        assert (await record(api, events))["accepted"] == 6

        # Past retention (January ended more than a month before April), but the yearly
        # subscription's open period started in January: its events are not invoiced yet.
        await advance(api, datetime(2041, 4, 2, tzinfo=UTC))
        assert (await partitions(rows, 2041)).get("usage_events_p2041_01") == 6

        # Canceled now, its last period (from January) ends today: it must be a month old too.
        done = await api.admin(
            CANCEL, {"input": {"subscriptionId": long_sub["id"], "atPeriodEnd": False}}
        )
        assert done["cancelSubscription"]["userErrors"] == []
        await advance(api, datetime(2041, 5, 1, tzinfo=UTC))
        assert "usage_events_p2041_01" in await partitions(rows, 2041)

        await advance(api, datetime(2041, 6, 1, tzinfo=UTC))
        left = await partitions(rows, 2041)
        # January to April are dropped (May's month is within the retention window).
        assert not {f"usage_events_p2041_0{m}" for m in range(1, 5)} & set(left)
        assert {f"usage_events_p2041_0{m}" for m in range(5, 9)} <= set(left)
        # The rollups stay: whole hours of a dropped month still answer, and the ids stay: a
        # late repeat of a dropped event is still a duplicate.
        assert (
            await usage(
                api,
                "tokens",
                c=monthly,
                **{k: v.replace("2039", "2041") for k, v in JANUARY.items()},
            )
        )["value"] == "15"
        assert (await record(api, events[:1]))["duplicates"] == 1


async def test_without_retention_nothing_is_dropped(make_api: MakeApi, rows: Rows) -> None:
    await rows.set_clock(NOW.replace(year=2043))
    async with make_api(billing=manual_clock()) as api:
        cid = await make_customer(api, "acme")
        await meter(api, "tokens", "SUM")
        await record(
            api,
            [
                {
                    "id": "a",
                    "customerId": cid,
                    "meter": "tokens",
                    "timestamp": "2043-01-02T00:00:00Z",
                }
            ],
        )
        await advance(api, datetime(2044, 1, 2, tzinfo=UTC))
        assert (await partitions(rows, 2043))["usage_events_p2043_01"] == 1


def test_the_retention_setting() -> None:
    assert Settings.from_env({}).billing.usage_retention_months is None
    env = {"BILLING_GQL_USAGE_RETENTION_MONTHS": " 13 "}
    assert Settings.from_env(env).billing.usage_retention_months == 13
    for bad in ("0", "-1", "a year"):
        with pytest.raises(SettingsError, match="BILLING_GQL_USAGE_RETENTION_MONTHS"):
            Settings.from_env({"BILLING_GQL_USAGE_RETENTION_MONTHS": bad})
