"""recordUsage through GraphQL over HTTP: idempotency, whole-batch validation, the clock."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from billing_helpers import RECORD, Rows, make_customer, meter, record, session_for, usage

from billing_gql.graphql.context import ADMIN, Context
from billing_gql.graphql.http import DocumentCache
from billing_gql.graphql.types.usage import RECORD_USAGE_RESULT
from billing_gql.settings import GraphQLSettings
from billing_gql.testing import ApiClient

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MARCH = {"from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}


def event(
    i: int | str, customer_id: str, meter_code: str = "calls", **extra: Any
) -> dict[str, Any]:
    return {"id": f"evt_{i}", "customerId": customer_id, "meter": meter_code, **extra}


async def test_duplicates_within_and_across_batches_are_counted_once(clocked: ApiClient) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls", "SUM")
    first = await record(
        clocked,
        [
            event(1, cid, value="5"),
            event(2, cid, value="7"),
            event(1, cid, value="100"),  # a repeat inside the batch: the first one counts
        ],
    )
    assert first == {"accepted": 2, "duplicates": 1, "userErrors": []}
    again = await record(clocked, [event(2, cid, value="7"), event(3, cid, value="1")])
    assert again == {"accepted": 1, "duplicates": 1, "userErrors": []}
    summary = await usage(clocked, "calls", c=cid, **MARCH)
    assert summary["value"] == "13"


async def test_concurrent_overlapping_batches_never_double_count(clocked: ApiClient) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "tokens", "SUM")
    rng = random.Random(4)
    pool = [event(i, cid, "tokens", value=str(i)) for i in range(400)]
    batches = []
    for _ in range(6):
        picked = rng.sample(pool, 250)  # overlapping, each in its own order
        batches.append(picked)
    results = await asyncio.gather(*(record(clocked, b) for b in batches))
    assert all(r["userErrors"] == [] for r in results)
    distinct = {e["id"] for b in batches for e in b}
    assert sum(r["accepted"] for r in results) == len(distinct)
    assert sum(r["accepted"] + r["duplicates"] for r in results) == 6 * 250
    expected = sum(int(e["value"]) for e in pool if e["id"] in distinct)
    assert (await usage(clocked, "tokens", c=cid, **MARCH))["value"] == str(expected)
    # Sending everything once more changes nothing.
    replay = await asyncio.gather(*(record(clocked, b) for b in batches))
    assert sum(r["accepted"] for r in replay) == 0
    assert (await usage(clocked, "tokens", c=cid, **MARCH))["value"] == str(expected)


async def test_one_bad_event_rejects_the_batch_and_names_each_index(
    clocked: ApiClient,
) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    await meter(clocked, "tokens", "SUM", property="tokens")
    late = (NOW + timedelta(minutes=6)).isoformat()
    events = [
        event(0, cid),
        event(1, cid, "nope"),
        event(2, cid),
        event(3, cid, timestamp=late),
        {"id": "evt_4", "customerId": "00000000-0000-0000-0000-000000000000", "meter": "calls"},
        {"id": "evt_5", "customerId": cid, "externalCustomerId": "acme", "meter": "calls"},
        {"id": "evt_6", "meter": "calls"},
        event(7, cid, value="-1"),
        event(8, cid, "tokens", properties={"model": "x"}),
        event(9, cid, properties=[1, 2]),
        {"id": "evt_10", "externalCustomerId": "nobody", "meter": "calls"},
        event(11, cid, "tokens", properties={"tokens": "many"}),
        {"id": "", "customerId": cid, "meter": "calls"},
        event(13, cid, "tokens", properties={"tokens": 12}),
    ]
    payload = await record(clocked, events, ok=False)
    assert payload["accepted"] == 0 and payload["duplicates"] == 0
    got = [(e["field"], e["code"]) for e in payload["userErrors"]]
    assert got == [
        (["input", "events", "1", "meter"], "UNKNOWN_METER"),
        (["input", "events", "3", "timestamp"], "TIMESTAMP_IN_FUTURE"),
        (["input", "events", "4", "customerId"], "UNKNOWN_CUSTOMER"),
        (["input", "events", "5", "customerId"], "INVALID_INPUT"),
        (["input", "events", "6", "customerId"], "INVALID_INPUT"),
        (["input", "events", "7", "value"], "INVALID_INPUT"),
        (["input", "events", "8", "properties", "tokens"], "INVALID_INPUT"),
        (["input", "events", "9", "properties"], "INVALID_INPUT"),
        (["input", "events", "10", "externalCustomerId"], "UNKNOWN_CUSTOMER"),
        (["input", "events", "11", "properties", "tokens"], "INVALID_INPUT"),
        (["input", "events", "12", "id"], "INVALID_INPUT"),
    ]
    # Nothing was stored, not even the good events...
    assert (await usage(clocked, "calls", c=cid, **MARCH))["value"] == "0"
    assert (await usage(clocked, "tokens", c=cid, **MARCH))["value"] == "0"
    # ...so they are accepted (not duplicates) once sent alone.
    good = [events[0], events[2], events[13]]
    assert await record(clocked, good) == {"accepted": 3, "duplicates": 0, "userErrors": []}
    assert (await usage(clocked, "tokens", c=cid, **MARCH))["value"] == "12"


async def test_more_than_1000_events_is_refused(clocked: ApiClient) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    payload = await record(clocked, [event(i, cid) for i in range(1001)], ok=False)
    assert payload["accepted"] == 0
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        (["input", "events"], "TOO_MANY_EVENTS")
    ]
    ok = await record(clocked, [event(i, cid) for i in range(1000)])
    assert ok == {"accepted": 1000, "duplicates": 0, "userErrors": []}


async def test_future_rule_and_default_timestamp_follow_the_test_clock(
    clocked: ApiClient, rows: Rows
) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    edge = NOW + timedelta(minutes=5)
    ok = await record(clocked, [event("edge", cid, timestamp=edge.isoformat()), event("now", cid)])
    assert ok["accepted"] == 2
    over = await record(
        clocked,
        [event("over", cid, timestamp=(edge + timedelta(seconds=1)).isoformat())],
        ok=False,
    )
    assert over["userErrors"][0]["code"] == "TIMESTAMP_IN_FUTURE"
    # The default timestamp is the clock's now: it falls in [NOW, NOW + 1s).
    at_now = await usage(
        clocked,
        "calls",
        c=cid,
        **{"from": NOW.isoformat(), "to": (NOW + timedelta(seconds=1)).isoformat()},
    )
    assert at_now["value"] == "1"
    # Once the clock moves on, the same timestamp is no longer in the future.
    await rows.set_clock(NOW + timedelta(minutes=10))
    later = await record(
        clocked, [event("over", cid, timestamp=(edge + timedelta(seconds=1)).isoformat())]
    )
    assert later == {"accepted": 1, "duplicates": 0, "userErrors": []}


async def test_late_events_count_in_the_period_of_their_timestamp(
    clocked: ApiClient, rows: Rows
) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    await rows.set_clock(datetime(2026, 4, 2, tzinfo=UTC))
    await record(
        clocked,
        [
            event("march", cid, timestamp="2026-03-31T23:59:59.999999Z"),
            event("april", cid, timestamp="2026-04-01T00:00:00Z"),
        ],
    )
    assert (await usage(clocked, "calls", c=cid, **MARCH))["value"] == "1"
    april = await usage(clocked, "calls", c=cid)  # default: the clock's calendar month
    assert april == {
        "meter": "calls",
        "value": "1",
        "from": "2026-04-01T00:00:00Z",
        "to": "2026-05-01T00:00:00Z",
    }


async def test_timestamps_are_stored_to_the_microsecond(clocked: ApiClient) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    stamps = [
        "1969-12-31T23:59:59.999999Z",
        "1900-02-28T12:00:00.000001+01:00",
        "2026-03-10T13:59:59.5+02:00",
    ]
    await record(clocked, [event(i, cid, timestamp=ts) for i, ts in enumerate(stamps)])
    # Each event alone in a one-microsecond window at its instant (offsets taken into account).
    for start, end in [
        ("1969-12-31T23:59:59.999999Z", "1970-01-01T00:00:00Z"),
        ("1900-02-28T11:00:00.000001Z", "1900-02-28T11:00:00.000002Z"),
        ("2026-03-10T11:59:59.5Z", "2026-03-10T11:59:59.500001Z"),
    ]:
        window = await usage(clocked, "calls", c=cid, **{"from": start, "to": end})
        assert window["value"] == "1", (start, window)
    around = await usage(
        clocked,
        "calls",
        c=cid,
        **{"from": "1969-12-31T23:59:59.999998Z", "to": "1969-12-31T23:59:59.999999Z"},
    )
    assert around["value"] == "0"


async def test_external_customer_ids_and_defaults(clocked: ApiClient) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls", "SUM")
    payload = await record(
        clocked,
        [
            {"id": "a", "externalCustomerId": "acme", "meter": "calls"},  # value defaults to 1
            {"id": "b", "externalCustomerId": "acme", "meter": "calls", "value": None},
            {"id": "c", "customerId": cid, "meter": "calls", "value": "0.25"},
        ],
    )
    assert payload == {"accepted": 3, "duplicates": 0, "userErrors": []}
    assert (await usage(clocked, "calls", x="acme", **MARCH))["value"] == "2.25"


async def test_record_usage_is_admin_only(clocked: ApiClient) -> None:
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    token = await session_for(clocked, cid)
    variables = {"input": {"events": [event(1, cid)]}}
    as_customer = await clocked.gql(RECORD, variables, token=token)
    assert as_customer.error_codes == ["FORBIDDEN"]
    anonymous = await clocked.gql(RECORD, variables)
    assert anonymous.error_codes == ["UNAUTHENTICATED"]
    # Refused before its events are even read.
    malformed = {"input": {"events": [{**event(1, cid), "value": 5}]}}
    assert (await clocked.gql(RECORD, malformed, token=token)).error_codes == ["FORBIDDEN"]
    assert (await usage(clocked, "calls", c=cid, **MARCH))["value"] == "0"


async def test_bulk_and_ordinary_paths_agree(clocked: ApiClient) -> None:
    """A document the bulk path does not take (inline literals, aliases, two fields) gives the
    same results and errors as the variables form it takes."""
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls", "SUM")
    inline = f"""mutation {{ first: recordUsage(input: {{events: [
        {{id: "i1", customerId: "{cid}", meter: "calls", value: "2"}},
        {{id: "i1", customerId: "{cid}", meter: "calls", value: "2"}}]}}) {{
          accepted duplicates userErrors {{ field code }} __typename }} }}"""
    data = (await clocked.gql(inline, admin=True)).ok()
    assert data["first"] == {
        "accepted": 1,
        "duplicates": 1,
        "userErrors": [],
        "__typename": "RecordUsagePayload",
    }
    # The variables form, with an alias, a fragment and __typename.
    fragment = """mutation Send($in: RecordUsageInput!) { sent: recordUsage(input: $in) {
        ...Counts userErrors { field code } } }
        fragment Counts on RecordUsagePayload { accepted duplicates __typename }"""
    events = [
        {"id": "i1", "customerId": cid, "meter": "calls", "value": "2"},
        {"id": "v2", "customerId": cid, "meter": "calls", "value": "3"},
    ]
    data = (await clocked.gql(fragment, {"in": {"events": events}}, admin=True)).ok()
    assert data["sent"] == {
        "accepted": 1,
        "duplicates": 1,
        "userErrors": [],
        "__typename": "RecordUsagePayload",
    }
    bad_inline = f"""mutation {{ recordUsage(input: {{events: [
        {{id: "x", customerId: "{cid}", meter: "nope"}}]}}) {{ userErrors {{ field code }} }} }}"""
    bad = (await clocked.gql(bad_inline, admin=True)).data["recordUsage"]["userErrors"]
    assert bad == [{"field": ["input", "events", "0", "meter"], "code": "UNKNOWN_METER"}]
    assert (await usage(clocked, "calls", c=cid, **MARCH))["value"] == "5"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("value", 3, "Decimal values are strings"),
        ("value", "three", "is not a decimal number"),
        # Python's Decimal() takes these; the Decimal scalar does not, on either path.
        ("value", "1_000", "is not a decimal number"),
        ("value", "1E+999999999", "is not a finite number"),
        ("timestamp", "2026-03-10T12:00:00", "has no UTC offset"),
        ("id", 7, "String cannot represent"),
        ("colour", "red", "colour"),
    ],
)
async def test_malformed_events_are_graphql_errors(
    clocked: ApiClient, field: str, value: object, message: str
) -> None:
    """What GraphQL's input coercion refuses stays a request error (HTTP 400 with
    application/graphql-response+json), on the bulk path as on the ordinary one."""
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    bad = {**event(1, cid), field: value}
    response = await clocked.gql(RECORD, {"input": {"events": [event(0, cid), bad]}}, admin=True)
    assert response.status == 400
    assert message in response.errors[0]["message"]
    assert (await usage(clocked, "calls", c=cid, **MARCH))["value"] == "0"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("evt_1", "to be an object"),
        ({"id": "evt_1", "customerId": "c"}, "to include required field 'meter'"),
        ({"id": "evt_1", "customerId": {"a": 1}, "meter": "calls"}, "ID cannot represent"),
        ({"id": "evt_1", "customerId": "c", "meter": ["calls"]}, "String cannot represent"),
    ],
)
async def test_malformed_event_shapes_are_graphql_errors(
    clocked: ApiClient, bad: object, message: str
) -> None:
    """Shapes the bulk path does not take (not an object, a missing or unhashable field) are
    reported by GraphQL's coercion, as on the ordinary path."""
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    response = await clocked.gql(RECORD, {"input": {"events": [event(0, cid), bad]}}, admin=True)
    assert response.status == 400
    assert message in response.errors[0]["message"], response.errors
    assert (await usage(clocked, "calls", c=cid, **MARCH))["value"] == "0"


async def test_an_integer_customer_id_is_coerced_as_graphql_does(clocked: ApiClient) -> None:
    """GraphQL's ID takes a JSON integer as its string: the bulk path leaves that to the
    ordinary path, which finds no such customer."""
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls")
    payload = await record(clocked, [event(0, cid), {**event(1, cid), "customerId": 5}], ok=False)
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        (["input", "events", "1", "customerId"], "UNKNOWN_CUSTOMER")
    ]


async def test_the_bulk_path_ingests_a_plain_variables_document_itself(clocked: ApiClient) -> None:
    """Every test above would pass as well if the endpoint never took the bulk path: here its
    pre-executor is run directly (in the app's event loop, where the pool lives). It stores a
    coercible batch itself and leaves the resolver an empty list and its payload; a batch
    GraphQL would refuse is handed back unchanged, nothing stored."""
    cid = await make_customer(clocked, "acme")
    await meter(clocked, "calls", "SUM")
    fast_path = DocumentCache(GraphQLSettings()).prepare(RECORD).fast
    assert fast_path is not None and fast_path.pre_execute is not None
    pre_execute = fast_path.pre_execute
    runtime = clocked.http.app.state.runtime  # type: ignore[attr-defined]

    async def run(variables: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        context = Context(runtime=runtime, viewer=ADMIN)
        return await pre_execute(context, variables), context.precomputed

    good = {"input": {"events": [event(1, cid, value="2"), event(2, cid, value="3")]}}
    rewritten, precomputed = await asyncio.to_thread(clocked.http.blocking_portal.call, run, good)
    assert rewritten == {"input": {"events": []}}
    payload = precomputed[RECORD_USAGE_RESULT]
    assert (payload.accepted, payload.duplicates, payload.user_errors) == (2, 0, [])
    assert (await usage(clocked, "calls", c=cid, **MARCH))["value"] == "5"

    bad = {"input": {"events": [event(3, cid, value="2"), event(4, cid, value=3)]}}
    rewritten, precomputed = await asyncio.to_thread(clocked.http.blocking_portal.call, run, bad)
    assert rewritten == bad
    assert precomputed == {}
    assert (await usage(clocked, "calls", c=cid, **MARCH))["value"] == "5"
