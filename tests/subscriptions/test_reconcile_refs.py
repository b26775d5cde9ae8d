"""Reconciliation hands the provider every subscription it holds there, built by the one
``SubscriptionRef`` builder: a fixed number of SQL statements however many there are, with
each customer's id at the provider."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from billing_helpers import StatementCounter, db_rows, make_plan

from billing_gql.errors import NotSupported, WebhookSignatureError
from billing_gql.plugins.hookspecs import hookimpl
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import (
    BillingEvent,
    CheckoutRequest,
    CheckoutSession,
    EventKind,
    ReconcileRequest,
    ReconcileResult,
    StoredDelivery,
    SubscriptionSnapshot,
    SubscriptionStatus,
    WebhookEnvelope,
    WebhookRequest,
)
from billing_gql.runtime import Runtime
from billing_gql.settings import BillingSettings, Settings
from billing_gql.subscriptions.reconcile import reconcile_provider


class ReconcilingBank(Provider):
    """A provider that only reconciles, and remembers what it was asked about."""

    name = "recbank"
    display_name = "Reconciling Bank"
    needs_provider_ref = False
    hosted_checkout = False
    asked: list[ReconcileRequest] = []

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        raise NotSupported("no checkouts")

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        raise WebhookSignatureError("no webhooks")

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        return []

    moved_to: str | None = None
    """A plan reference every even-numbered subscription is found on (None: nothing moved)."""

    async def reconcile(self, request: ReconcileRequest) -> ReconcileResult:
        ReconcilingBank.asked.append(request)
        if ReconcilingBank.moved_to is None:
            return ReconcileResult(events=[])
        moved = [
            ref
            for ref in request.subscriptions
            if ref.provider_subscription_id and int(ref.provider_subscription_id[5:]) % 2 == 0
        ]
        return ReconcileResult(
            events=[
                BillingEvent(
                    EventKind.SUBSCRIPTION_UPDATED,
                    request.now,
                    subscription=SubscriptionSnapshot(
                        provider_subscription_id=ref.provider_subscription_id or "",
                        status=SubscriptionStatus.ACTIVE,
                        plan_ref=ReconcilingBank.moved_to,
                    ),
                )
                for ref in moved
            ]
        )


class ReconcilingPlugin:
    @hookimpl
    def register_providers(self) -> Sequence[type[Provider]]:
        return [ReconcilingBank]


async def add_subscriptions(db_url: str, plan_id: str, first: int, last: int) -> None:
    """Customers ``first``..``last``, each with a live recbank subscription; the even ones
    with their id at the bank learned."""
    await db_rows(
        db_url,
        "WITH c AS (INSERT INTO customers (external_id, created_at, updated_at) "
        "SELECT 'r' || g, now(), now() FROM generate_series($2::int, $3::int) g "
        "RETURNING id, external_id), "
        "a AS (INSERT INTO customer_provider_accounts (customer_id, provider, "
        "provider_customer_id, created_at) SELECT id, 'recbank', 'cus_' || external_id, now() "
        "FROM c WHERE substr(external_id, 2)::int % 2 = 0) "
        "INSERT INTO subscriptions (customer_id, plan_id, provider, provider_subscription_id, "
        "status, currency, quantity, created_at, updated_at) SELECT c.id, $1::uuid, "
        "'recbank', 'sub_' || c.external_id, 'ACTIVE', 'USD', 1, now(), now() FROM c",
        plan_id,
        first,
        last,
    )


async def test_reconciliation_costs_the_same_statements_for_3_or_30_subscriptions(
    make_api,
    app_settings: Settings,
    clean_database,  # type: ignore[no-untyped-def]
) -> None:
    ReconcilingBank.asked, ReconcilingBank.moved_to = [], None
    settings = replace(
        app_settings,
        database=replace(app_settings.database, pool_min_size=3, pool_max_size=3),
        billing=BillingSettings(),
    )
    async with make_api(settings=settings, plugins=[ReconcilingPlugin()]) as api:
        plan = await make_plan(api, "p")
    runtime = await Runtime.start(
        settings, extra_plugins=[ReconcilingPlugin()], apply_migrations=False
    )
    try:
        counter = StatementCounter()
        connections = [h._con for h in runtime.db.pool._holders if h._con is not None]
        assert len(connections) == 3
        for conn in connections:
            conn.add_query_logger(counter)
        counts = []
        for first, last in ((1, 3), (4, 30)):
            await add_subscriptions(clean_database.url, plan["id"], first, last)
            await reconcile_provider(runtime, "recbank")  # warms the connections' caches
            counter.take()
            report = await reconcile_provider(runtime, "recbank")
            counts.append(len(counter.take()))
            assert report.checked == last
    finally:
        await runtime.close()
    assert counts[0] == counts[1], counts
    refs = {r.provider_subscription_id: r for r in ReconcilingBank.asked[-1].subscriptions}
    assert len(refs) == 30
    assert refs["sub_r4"].customer.provider_customer_id == "cus_r4"
    assert refs["sub_r5"].customer.provider_customer_id is None
    assert refs["sub_r5"].customer.external_id == "r5" and refs["sub_r5"].plan.code == "p"


async def test_the_report_names_the_plans_subscriptions_moved_between(
    make_api,
    app_settings: Settings,
    clean_database,  # type: ignore[no-untyped-def]
) -> None:
    ReconcilingBank.asked, ReconcilingBank.moved_to = [], "price_q"
    settings = replace(app_settings, billing=BillingSettings())
    async with make_api(settings=settings, plugins=[ReconcilingPlugin()]) as api:
        plan = await make_plan(api, "p")
        await make_plan(api, "q", providerRefs=[{"provider": "recbank", "ref": "price_q"}])
    await add_subscriptions(clean_database.url, plan["id"], 1, 4)
    runtime = await Runtime.start(
        settings, extra_plugins=[ReconcilingPlugin()], apply_migrations=False
    )
    try:
        report = await reconcile_provider(runtime, "recbank")
        again = await reconcile_provider(runtime, "recbank")
    finally:
        ReconcilingBank.moved_to = None
        await runtime.close()
    moved = {c.provider_subscription_id: c.fields["plan"] for c in report.changes}
    assert moved == {"sub_r2": ("p", "q"), "sub_r4": ("p", "q")}
    assert "plan p → q" in report.changes[0].describe()
    assert again.changes == []
