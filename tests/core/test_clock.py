"""The test clock: advanceClock's gate, auth and validation (the billing runs are in
test_renewals.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from billing_gql.settings import BillingSettings
from billing_gql.testing import ApiClient
from billing_gql.testing.fixtures import MakeApi

ADVANCE = """mutation($to: DateTime!) { advanceClock(to: $to) {
  now userErrors { field message code } } }"""


async def test_advance_clock_is_disabled_without_the_flag(api: ApiClient) -> None:
    result = await api.gql(ADVANCE, {"to": "2030-01-01T00:00:00Z"}, admin=True)
    payload = result.data["advanceClock"]
    assert payload["now"] is None
    assert [e["code"] for e in payload["userErrors"]] == ["FEATURE_DISABLED"]


async def test_advance_clock_moves_forward_only(make_api: MakeApi) -> None:
    async with make_api(billing=BillingSettings(test_clock=True)) as api:
        start = datetime.now(UTC).replace(microsecond=0)
        first = (await api.gql(ADVANCE, {"to": start.isoformat()}, admin=True)).ok()
        frozen = datetime.fromisoformat(first["advanceClock"]["now"])
        # The clock starts frozen at (about) the wall time of first use.
        target = frozen + timedelta(days=40, hours=3)
        moved = (await api.gql(ADVANCE, {"to": target.isoformat()}, admin=True)).ok()
        assert datetime.fromisoformat(moved["advanceClock"]["now"]) == target

        back = await api.gql(
            ADVANCE, {"to": (target - timedelta(seconds=1)).isoformat()}, admin=True
        )
        payload = back.data["advanceClock"]
        assert payload["now"] is None
        assert payload["userErrors"][0]["code"] == "INVALID_INPUT"
        assert payload["userErrors"][0]["field"] == ["to"]

        # An offset other than UTC is the same instant; the output is UTC.
        same = target.astimezone(UTC).replace(tzinfo=None).isoformat() + "+00:00"
        again = (await api.gql(ADVANCE, {"to": same}, admin=True)).ok()
        assert again["advanceClock"]["now"].startswith(target.strftime("%Y-%m-%dT%H:%M:%S"))


async def test_advance_clock_needs_admin(make_api: MakeApi) -> None:
    async with make_api(billing=BillingSettings(test_clock=True)) as api:
        customer = (
            await api.admin(
                'mutation { upsertCustomer(input: {externalId: "c1"}) { customer { id } } }'
            )
        )["upsertCustomer"]["customer"]
        token = (
            await api.admin(
                "mutation($id: ID!) { createCustomerSession(customerId: $id) { token } }",
                {"id": customer["id"]},
            )
        )["createCustomerSession"]["token"]
        anonymous = await api.gql(ADVANCE, {"to": "2040-01-01T00:00:00Z"})
        assert anonymous.error_codes == ["UNAUTHENTICATED"]
        as_customer = await api.gql(ADVANCE, {"to": "2040-01-01T00:00:00Z"}, token=token)
        assert as_customer.error_codes == ["FORBIDDEN"]
        naive = await api.gql(ADVANCE, {"to": "2040-01-01T00:00:00"}, admin=True)
        assert naive.errors and naive.data is None
