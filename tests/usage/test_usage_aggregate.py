"""Meters' aggregations and the usage query, through GraphQL over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billing_helpers import (
    USAGE,
    Rows,
    make_customer,
    meter,
    record,
    session_for,
    usage,
    usd_plan_id,
)

from billing_gql.testing import ApiClient

NOW = datetime(2026, 5, 20, 8, 30, tzinfo=UTC)
MAY = {"from": "2026-05-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"}


def ev(i: str, cid: str, m: str, ts: str = "2026-05-10T00:00:00Z", **extra: Any) -> dict[str, Any]:
    return {"id": i, "customerId": cid, "meter": m, "timestamp": ts, **extra}


async def test_every_aggregation_over_value(clocked: ApiClient, rows: Rows) -> None:
    await rows.set_clock(datetime(2026, 6, 20, tzinfo=UTC))  # June's event is not in the future
    cid = await make_customer(clocked, "acme")
    other = await make_customer(clocked, "other")
    for code, aggregation in [
        ("n", "COUNT"),
        ("s", "SUM"),
        ("mx", "MAX"),
        ("u", "UNIQUE_COUNT"),
        ("l", "LATEST"),
    ]:
        await meter(clocked, code, aggregation)
        values = ["2.5", "10", "2.50", "0.125", "7"]
        stamps = [
            "2026-05-02T00:00:00Z",
            "2026-05-03T00:00:00Z",
            "2026-05-04T00:00:00Z",
            "2026-05-09T00:00:00Z",
            "2026-05-05T00:00:00Z",
        ]
        events = [
            ev(f"{code}{i}", cid, code, ts, value=v)
            for i, (v, ts) in enumerate(zip(values, stamps, strict=True))
        ]
        # Another customer's events and events outside the period never count.
        events.append(ev(f"{code}-other", other, code, value="1000"))
        events.append(ev(f"{code}-april", cid, code, "2026-04-30T23:59:59Z", value="1000"))
        events.append(ev(f"{code}-june", cid, code, "2026-06-01T00:00:00Z", value="1000"))
        assert (await record(clocked, events))["accepted"] == 8
    expected = {
        "n": "5",
        "s": "22.125",  # 2.5 + 10 + 2.5 + 0.125 + 7
        "mx": "10",
        "u": "4",  # 2.5 and 2.50 are the same number
        "l": "0.125",  # the latest timestamp (May 9), not the last sent
    }
    for code, value in expected.items():
        assert (await usage(clocked, code, c=cid, **MAY))["value"] == value, code


async def test_aggregations_over_a_property(clocked: ApiClient) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "tokens", "SUM", property="tokens")
    await meter(clocked, "peak", "MAX", property="gb")
    await meter(clocked, "users", "UNIQUE_COUNT", property="user")
    await meter(clocked, "requests", "COUNT", property="path")
    await meter(clocked, "seats", "LATEST", property="seats")
    events = [
        ev("t1", cid, "tokens", properties={"tokens": 1200}),
        ev("t2", cid, "tokens", properties={"tokens": 0.5, "model": "x"}),
        ev("t3", cid, "tokens", properties={"tokens": "300.25"}),
        ev("p1", cid, "peak", properties={"gb": 1.5}),
        ev("p2", cid, "peak", properties={"gb": 12}),
        # UNIQUE_COUNT counts distinct values of any JSON type; 1 and 1.0 are one number,
        # "1" is a string; an event without the property is not counted.
        *[
            ev(f"u{i}", cid, "users", properties={"user": v})
            for i, v in enumerate(
                ["ann", "bob", "ann", 1, 1.0, "1", {"id": 7}, {"id": 7}, [1, 2], True, None]
            )
        ],
        ev("u-missing", cid, "users", properties={"other": "x"}),
        ev("u-none", cid, "users"),
        # COUNT counts events, whatever the property holds.
        ev("r1", cid, "requests", properties={"path": "/a"}),
        ev("r2", cid, "requests"),
        ev("s1", cid, "seats", "2026-05-03T00:00:00Z", properties={"seats": 3}),
        ev("s2", cid, "seats", "2026-05-07T00:00:00Z", properties={"seats": 5}, value="99"),
        ev("s3", cid, "seats", "2026-05-05T00:00:00Z", properties={"seats": 9}),
    ]
    assert (await record(clocked, events))["accepted"] == len(events)
    got = {
        m: (await usage(clocked, m, c=cid, **MAY))["value"]
        for m in ("tokens", "peak", "users", "requests", "seats")
    }
    # users: "ann", "bob", 1, "1", {"id": 7}, [1, 2], true, null
    assert got == {"tokens": "1500.75", "peak": "12", "users": "8", "requests": "2", "seats": "5"}


async def test_latest_breaks_timestamp_ties_by_ingestion_order(clocked: ApiClient) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "gauge", "LATEST")
    ts = "2026-05-10T10:00:00Z"
    await record(
        clocked, [ev("a", cid, "gauge", ts, value="1"), ev("b", cid, "gauge", ts, value="2")]
    )
    assert (await usage(clocked, "gauge", c=cid, **MAY))["value"] == "2"
    await record(clocked, [ev("c", cid, "gauge", ts, value="3")])
    assert (await usage(clocked, "gauge", c=cid, **MAY))["value"] == "3"
    # An earlier timestamp ingested later does not win.
    await record(clocked, [ev("d", cid, "gauge", "2026-05-10T09:59:59Z", value="4")])
    assert (await usage(clocked, "gauge", c=cid, **MAY))["value"] == "3"


async def test_empty_meters_are_zero(clocked: ApiClient) -> None:
    cid = await make_customer(clocked, "acme")
    for code, aggregation in [
        ("n", "COUNT"),
        ("s", "SUM"),
        ("mx", "MAX"),
        ("u", "UNIQUE_COUNT"),
        ("l", "LATEST"),
    ]:
        await meter(clocked, code, aggregation)
        assert (await usage(clocked, code, c=cid, **MAY))["value"] == "0"


async def test_default_period_is_the_live_subscriptions(clocked: ApiClient, rows: Rows) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    plan_id = await usd_plan_id(clocked, "pro")
    await record(
        clocked,
        [
            ev("before", cid, "calls", "2026-05-14T23:59:59Z"),
            ev("inside", cid, "calls", "2026-05-15T00:00:00Z"),
            ev("inside2", cid, "calls", "2026-05-20T00:00:00Z"),
        ],
    )
    # Without a live subscription: the clock's calendar month.
    assert await usage(clocked, "calls", c=cid) == {
        "meter": "calls",
        "value": "3",
        "from": "2026-05-01T00:00:00Z",
        "to": "2026-06-01T00:00:00Z",
    }
    # A canceled one does not count; the live one's current period does.
    await rows.subscription(
        cid,
        plan_id,
        start=datetime(2026, 4, 1, tzinfo=UTC),
        end=datetime(2026, 5, 1, tzinfo=UTC),
        status="CANCELED",
    )
    await rows.subscription(
        cid, plan_id, start=datetime(2026, 5, 15, tzinfo=UTC), end=datetime(2026, 6, 15, tzinfo=UTC)
    )
    assert await usage(clocked, "calls", c=cid) == {
        "meter": "calls",
        "value": "2",
        "from": "2026-05-15T00:00:00Z",
        "to": "2026-06-15T00:00:00Z",
    }
    # One given bound keeps the other from the default period.
    only_from = await usage(clocked, "calls", c=cid, **{"from": "2026-05-14T00:00:00Z"})
    assert only_from["value"] == "3" and only_from["to"] == "2026-06-15T00:00:00Z"


async def test_usage_selectors_and_auth(clocked: ApiClient) -> None:
    cid = await make_customer(clocked, "acme")
    other = await make_customer(clocked, "other")
    await meter(clocked, "calls")
    await record(clocked, [ev("a", cid, "calls")])
    token = await session_for(clocked, cid)
    own = await clocked.gql(USAGE, {"x": "acme", "m": "calls", **MAY}, token=token)
    assert own.ok()["usage"]["value"] == "1"
    theirs = await clocked.gql(USAGE, {"c": other, "m": "calls"}, token=token)
    assert theirs.error_codes == ["FORBIDDEN"] and theirs.data is None
    unknown_as_customer = await clocked.gql(USAGE, {"x": "ghost", "m": "calls"}, token=token)
    assert unknown_as_customer.error_codes == ["FORBIDDEN"]
    assert (await clocked.gql(USAGE, {"m": "calls"})).error_codes == ["UNAUTHENTICATED"]
    both = await clocked.gql(USAGE, {"c": cid, "x": "acme", "m": "calls"}, admin=True)
    assert both.error_codes == ["INVALID_INPUT"]
    neither = await clocked.gql(USAGE, {"m": "calls"}, admin=True)
    assert neither.error_codes == ["INVALID_INPUT"]
    ghost = await clocked.gql(USAGE, {"x": "ghost", "m": "calls"}, admin=True)
    assert ghost.error_codes == ["UNKNOWN_CUSTOMER"]
    no_meter = await clocked.gql(USAGE, {"c": cid, "m": "nope"}, admin=True)
    assert no_meter.error_codes == ["UNKNOWN_METER"]
    backwards = await clocked.gql(
        USAGE, {"c": cid, "m": "calls", "from": MAY["to"], "to": MAY["from"]}, admin=True
    )
    assert backwards.error_codes == ["INVALID_INPUT"]
