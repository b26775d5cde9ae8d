"""Reading one's own writes through one process: after a mutation (or a webhook delivery) the
next entitlement check waits for the process's listener to catch up before answering from
memory, so it never answers from before the change."""

from __future__ import annotations

from billing_helpers import make_customer, make_plan, subscribe

from billing_gql.entitlements.checks import cache_of, listener_of
from billing_gql.settings import BillingSettings
from billing_gql.testing.fixtures import MakeApi

QUERY = """query($c: ID!) { entitlement(customerId: $c, feature: "seats") { enabled limit } }"""


async def test_a_check_after_a_mutation_waits_for_the_listener(make_api: MakeApi) -> None:
    async with make_api(billing=BillingSettings(manual_provider=True)) as api:
        runtime = api.http.app.state.runtime  # type: ignore[attr-defined]
        cache, listener = cache_of(runtime), listener_of(runtime)
        assert cache is not None and listener is not None
        await make_plan(api, "pro", features=[{"feature": "seats", "limit": "4"}])
        customer = await make_customer(api, "usr_1")
        assert (await api.admin(QUERY, {"c": customer}))["entitlement"]["enabled"] is False
        assert cache.fenced == cache.local_writes  # that check caught up with both mutations
        synced, hits = listener.synced, cache.stats.hits
        assert (await api.admin(QUERY, {"c": customer}))["entitlement"]["enabled"] is False
        assert (listener.synced, cache.stats.hits) == (synced, hits + 1)  # memory, no wait

        await subscribe(api, customer, "pro")  # two mutations, each a change of this process
        assert cache.local_writes > cache.fenced
        data = await api.admin(QUERY, {"c": customer})
        assert data["entitlement"] == {"enabled": True, "limit": "4"}
        assert listener.synced > synced  # it waited for a marker first
        assert cache.fenced == cache.local_writes
