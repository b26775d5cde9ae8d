"""The alias limit counts aliases as the operation executes them (fragments expanded).

A fragment's aliases used to be counted once however often it was spread, so a customer token
could nest a few small fragments (``viewer → subscriptions → customer → subscriptions …``) and
have the server resolve tens of thousands of aliased objects with under 100 aliases on paper.
"""

from __future__ import annotations

from billing_helpers import make_customer, make_plan, session_for, subscribe

from billing_gql.testing import ApiClient

VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"


async def test_aliases_in_a_fragment_count_once_per_spread(api: ApiClient) -> None:
    await make_plan(api)
    sixty = " ".join(f"b{i}: code" for i in range(60))
    # 2 + 2 x 60 = 122 aliased fields executed, 62 written.
    twice = f"query {{ x: plans {{ ...G }} y: plans {{ ...G }} }} fragment G on Plan {{ {sixty} }}"
    result = await api.gql(twice, admin=True)
    assert result.status == 400, result.body
    assert result.error_codes == [VALIDATION_FAILED]
    # Spread once it stays within the limit (61 aliases) and runs.
    once = f"query {{ x: plans {{ ...G }} }} fragment G on Plan {{ {sixty} }}"
    assert (await api.gql(once, admin=True)).ok()["x"][0]["b0"] == "pro"


async def test_nested_fragments_cannot_multiply_aliases_for_a_customer(api: ApiClient) -> None:
    await make_plan(api)
    ann = await make_customer(api, "ann")
    await subscribe(api, ann)
    token = await session_for(api, ann)
    # 8 aliases per level, 5 levels: 40 written, 8 + 8^2 + ... + 8^5 = 37448 executed.
    fragments = []
    for level in range(5):
        inner = f"...L{level + 1}" if level < 4 else "id"
        if level % 2 == 0:
            body = " ".join(f"s{i}: subscriptions {{ {inner} }}" for i in range(8))
            fragments.append(f"fragment L{level} on Customer {{ {body} }}")
        else:
            body = " ".join(f"c{i}: customer {{ {inner} }}" for i in range(8))
            fragments.append(f"fragment L{level} on Subscription {{ {body} }}")
    query = "{ viewer { ...L0 } } " + " ".join(fragments)
    result = await api.gql(query, token=token)
    assert result.status == 400
    assert result.error_codes == [VALIDATION_FAILED]
    assert "data" not in result.body
