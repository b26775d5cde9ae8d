"""Reconciliation: missed deliveries repaired from Polar's API (``billing-gql reconcile polar``)."""

from __future__ import annotations

import pytest
from polar_world import World, entitled, open_checkout

import billing_gql_polar.plugin
from billing_gql.cli import main
from billing_gql.runtime import Runtime
from billing_gql.subscriptions.reconcile import reconcile_provider
from billing_gql.testing import TestDatabase
from billing_gql_polar.testing import FakePolar


async def test_reconcile_repairs_missed_deliveries(world: World) -> None:
    fake = world.fake
    payload = await open_checkout(world)
    fake.pay(fake.checkout_for(payload["checkout"]["id"])["id"])
    deliveries = fake.drain()
    missed = [d for d in deliveries if d.type == "benefit_grant.created"]
    await world.post_all([d for d in deliveries if d not in missed])
    [sub] = (await world.state())["subscriptions"]
    assert not entitled(await world.state(), "api_calls")
    fake.cancel(sub["providerSubscriptionId"], at_period_end=True)  # in Polar's dashboard
    late = fake.drain()  # these never arrive (yet)

    runtime = await Runtime.start(
        world.settings,
        extra_plugins=[billing_gql_polar.plugin],
        transports={"polar": fake.transport()},
        apply_migrations=False,
    )
    try:
        report = await reconcile_provider(runtime, "polar")
        again = await reconcile_provider(runtime, "polar")
    finally:
        await runtime.close()
    assert report.checked == 1 and report.events == 2  # the subscription and one grant
    [change] = report.changes
    assert set(change.fields) == {"cancelAtPeriodEnd", "canceledAt"}
    assert change.fields["cancelAtPeriodEnd"] == (False, True)
    assert change.fields["canceledAt"][0] is None
    assert "cancelAtPeriodEnd false → true" in change.describe()
    assert sub["providerSubscriptionId"] in change.describe()
    assert again.changes == []
    state = await world.state()
    assert state["subscriptions"][0]["cancelAtPeriodEnd"] is True
    assert entitled(state, "api_calls") and entitled(state, "seats")
    paths = [(c.method, c.path) for c in fake.calls if c.method == "GET"]
    assert paths.count(("GET", f"/v1/subscriptions/{sub['providerSubscriptionId']}")) == 2
    assert paths.count(("GET", "/v1/customers/external/usr_42/state")) == 2

    # The missed deliveries arriving after all change nothing more.
    await world.post_all([*missed, *late])
    assert await world.state() == state


def test_reconcile_cli_finds_the_plugin_through_its_entry_point(
    monkeypatch: pytest.MonkeyPatch,
    clean_database: TestDatabase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", clean_database.url)
    monkeypatch.setenv("BILLING_GQL_PLUGINS", "polar")
    for key, value in FakePolar().env("http://127.0.0.1:9").items():
        monkeypatch.setenv(key, value)  # unreachable: with nothing to check, nothing is called
    assert main(["reconcile", "polar"]) == 0
    assert capsys.readouterr().out == "reconciled polar: 0 subscriptions checked, 0 changed\n"
