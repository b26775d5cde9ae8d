"""updatePlan's explicit nulls are reported at camelCase paths, all at once."""

from __future__ import annotations

from billing_helpers import make_plan

from billing_gql.testing import ApiClient

UPDATE = """mutation($input: UpdatePlanInput!) { updatePlan(input: $input) {
  plan { code } userErrors { field message code } } }"""


async def test_update_plan_nulls_are_reported_at_camelcase_paths(api: ApiClient) -> None:
    await make_plan(api)
    result = await api.gql(
        UPDATE,
        {"input": {"code": "pro", "providerRefs": None, "trialDays": None, "intervalCount": None}},
        admin=True,
    )
    payload = result.data["updatePlan"]
    assert payload["plan"] is None
    assert sorted((tuple(e["field"]), e["code"]) for e in payload["userErrors"]) == [
        (("input", "intervalCount"), "INVALID_INPUT"),
        (("input", "providerRefs"), "INVALID_INPUT"),
        (("input", "trialDays"), "INVALID_INPUT"),
    ]
