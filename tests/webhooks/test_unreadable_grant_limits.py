"""A provider benefit with an unreadable ``metadata.limit`` must not grant unlimited.

The core's default ``map_provider_grant`` read a limit it could not parse (``"-5"``, ``"ten"``,
``true``) as no limit at all, i.e. unlimited — and an unlimited grant wins over every limit the
customer's plans set (docs/api.md#entitlements: "an unlimited (null) limit wins").
"""

from __future__ import annotations

from test_provider_events import Env, entitlement, env, make_customer, pay_event, post

__all__ = ["env"]

NOT_ENTITLED = {"feature": "seats", "enabled": False, "limit": "0", "used": "0", "remaining": "0"}


async def test_an_unreadable_benefit_limit_grants_nothing(env: Env) -> None:
    cid = await make_customer(env.api, "grantee")
    for number, limit in enumerate(["-5", "ten", True]):
        grant = {
            "id": f"bad{number}",
            "benefit": f"b{number}",
            "granted": True,
            "customer_id": cid,
            "metadata": {"feature": "seats", "limit": limit},
        }
        await post(env, pay_event("grant.updated", "2027-01-31T12:00:00+00:00", grant=grant))
    assert await entitlement(env.api, cid, "seats") == NOT_ENTITLED

    good = {
        "id": "good",
        "benefit": "b9",
        "granted": True,
        "customer_id": cid,
        "metadata": {"feature": "seats", "limit": " 7 "},
    }
    await post(env, pay_event("grant.updated", "2027-01-31T12:00:00+00:00", grant=good))
    assert (await entitlement(env.api, cid, "seats"))["limit"] == "7"
