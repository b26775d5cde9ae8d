"""The worker: the queue's schema in ``migrate``, the tick schedule, and ``billing-gql worker``
running due work on its own."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest
from billing_helpers import START, advance, make_customer, make_usd_plan, process_env
from fakes import FAKE_ENV, FakePayApi, FakePlugin, pay_event

from billing_gql.runtime import migrate_database
from billing_gql.settings import BillingSettings, Settings, SettingsError
from billing_gql.testing import ApiClient, ServerProcess, run_cli
from billing_gql.testing.database import TestDatabase
from billing_gql.testing.fixtures import MakeApi
from billing_gql.worker.queue import apply_queue_schema, tick_cron


def test_tick_schedule() -> None:
    assert tick_cron(15) == "* * * * * */15"
    assert tick_cron(1) == "* * * * * */1"
    assert tick_cron(60) == "* * * * *"
    assert tick_cron(300) == "*/5 * * * *"
    assert Settings.from_env({}).billing.worker_tick_seconds == 15
    assert (
        Settings.from_env({"BILLING_GQL_WORKER_TICK_SECONDS": "30"}).billing.worker_tick_seconds
        == 30
    )
    for bad in ("7", "90", "0", "x"):
        with pytest.raises(SettingsError, match="BILLING_GQL_WORKER_TICK_SECONDS"):
            Settings.from_env({"BILLING_GQL_WORKER_TICK_SECONDS": bad})


async def test_queue_schema_is_applied_once(clean_database: TestDatabase) -> None:
    # The test database was migrated at the start of the run: everything is there already.
    assert await apply_queue_schema(clean_database.url) == []
    assert await migrate_database(clean_database.url) == []
    conn = await asyncpg.connect(clean_database.url)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'procrastinate_%'"
        )
        mark = await conn.fetchval(
            "SELECT obj_description('procrastinate_jobs'::regclass, 'pg_class')"
        )
    finally:
        await conn.close()
    assert tables >= 4
    assert mark.startswith("procrastinate 3.")


async def test_migrate_command_applies_ours_and_the_queues_then_nothing(
    clean_database: TestDatabase,
) -> None:
    name = f"billing_gql_test_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(clean_database.url)
    admin = await asyncpg.connect(parts._replace(path="/postgres").geturl())
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = parts._replace(path=f"/{name}").geturl()
        env = process_env(url)
        first = await asyncio.to_thread(run_cli, "migrate", env=env)
        assert first.returncode == 0, first.stderr
        applied = first.stdout.splitlines()
        assert any("procrastinate" in line for line in applied), applied
        assert len(applied) > 2
        second = await asyncio.to_thread(run_cli, "migrate", env=env)
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == "up to date"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_worker_command_runs_due_work_on_its_tick(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    plan = await make_usd_plan(api)
    customer = await make_customer(api, "w1")
    conn = await asyncpg.connect(clean_database.url)
    try:
        # Wall-clock billing time here (no test clock): this checkout expired a minute ago.
        now = datetime.now(UTC)
        checkout_id = await conn.fetchval(
            "INSERT INTO checkouts (customer_id, plan_id, provider, status, purpose, currency, "
            "quantity, amount_minor, amount_paid_minor, expires_at, created_at, updated_at) "
            "VALUES ($1, $2, 'manual', 'OPEN', 'new', 'USD', 1, 2900, 0, $3, $4, $4) "
            "RETURNING id",
            uuid.UUID(customer),
            uuid.UUID(plan["id"]),
            now - timedelta(minutes=1),
            now - timedelta(hours=1),
        )
        env = process_env(
            clean_database.url,
            BILLING_GQL_MANUAL_PROVIDER="1",
            BILLING_GQL_WORKER_TICK_SECONDS="1",
        )
        with ServerProcess(env, worker=True) as worker:
            status = "OPEN"
            for _ in range(600):
                status = await conn.fetchval(
                    "SELECT status FROM checkouts WHERE id = $1", checkout_id
                )
                if status != "OPEN" or not worker.running:
                    break
                await asyncio.sleep(0.1)
            assert status == "EXPIRED", "\n".join(worker.output)
            ticks = await conn.fetchval(
                "SELECT count(*) FROM procrastinate_periodic_defers "
                "WHERE task_name = 'billing_gql.tick'"
            )
            assert ticks >= 1
    finally:
        await conn.close()
    assert worker.returncode == 0, "\n".join(worker.output)


async def test_the_tick_retries_provider_deliveries_that_failed_to_apply(
    make_api: MakeApi, clean_database: TestDatabase
) -> None:
    billing = BillingSettings(test_clock=True)
    fake = FakePayApi()
    async with make_api(
        plugins=[FakePlugin()],
        env=FAKE_ENV,
        billing=billing,
        transports={"fakepay": fake.transport()},
    ) as api:
        start = await advance(api, START)
        await make_usd_plan(api, providerRefs=[{"provider": "fakepay", "ref": "price_pro"}])
        customer = await make_customer(api, "p1")
        created = await api.admin(
            """mutation($input: CreateCheckoutInput!) { createCheckout(input: $input) {
                 checkout { id status } userErrors { code } } }""",
            {"input": {"customerId": customer, "planCode": "pro", "provider": "fakepay"}},
        )
        checkout_id = created["createCheckout"]["checkout"]["id"]
        # The provider reports the completion under a session id we do not know yet.
        body, headers = pay_event(
            "checkout.completed",
            start.isoformat(),
            "evt_early",
            provider_checkout_id="fcs_late",
            amount_total=3000,
            currency="USD",
        )
        assert (await api.post_webhook("fakepay", body, headers)).status_code == 200
        conn = await asyncpg.connect(clean_database.url)
        try:
            failed = await conn.fetchrow(
                "SELECT status, next_attempt_at FROM webhook_deliveries WHERE event_id = 'evt_early'"
            )
            assert failed["status"] == "failed"
            await conn.execute(
                "UPDATE checkouts SET provider_checkout_id = 'fcs_late' WHERE id = $1",
                uuid.UUID(checkout_id),
            )
            # Nothing is retried before its time; advancing the clock to it runs the retry.
            await advance(api, failed["next_attempt_at"] - timedelta(seconds=1))
            assert (
                await conn.fetchval(
                    "SELECT status FROM webhook_deliveries WHERE event_id = 'evt_early'"
                )
                == "failed"
            )
            await advance(api, failed["next_attempt_at"])
            assert (
                await conn.fetchval(
                    "SELECT status FROM webhook_deliveries WHERE event_id = 'evt_early'"
                )
                == "applied"
            )
        finally:
            await conn.close()
        state = await api.admin(
            "query($id: ID!) { checkout(id: $id) { status } }", {"id": checkout_id}
        )
        assert state["checkout"]["status"] == "COMPLETED"


async def test_serve_runs_the_worker_in_process_unless_told_not_to(
    api: ApiClient, clean_database: TestDatabase
) -> None:
    plan = await make_usd_plan(api)
    customer = await make_customer(api, "s1")
    env = process_env(
        clean_database.url, BILLING_GQL_MANUAL_PROVIDER="1", BILLING_GQL_WORKER_TICK_SECONDS="1"
    )
    conn = await asyncpg.connect(clean_database.url)
    try:
        with ServerProcess(env) as api_only:
            with ServerProcess(env, args=()) as serving:
                now = datetime.now(UTC)
                checkout_id = await conn.fetchval(
                    "INSERT INTO checkouts (customer_id, plan_id, provider, status, purpose, "
                    "currency, quantity, amount_minor, amount_paid_minor, expires_at, "
                    "created_at, updated_at) VALUES ($1, $2, 'manual', 'OPEN', 'new', 'USD', 1, "
                    "2900, 0, $3, $4, $4) RETURNING id",
                    uuid.UUID(customer),
                    uuid.UUID(plan["id"]),
                    now - timedelta(minutes=1),
                    now - timedelta(hours=1),
                )
                status = "OPEN"
                for _ in range(600):
                    status = await conn.fetchval(
                        "SELECT status FROM checkouts WHERE id = $1", checkout_id
                    )
                    if status != "OPEN" or not serving.running:
                        break
                    await asyncio.sleep(0.1)
                assert status == "EXPIRED", "\n".join(serving.output)
                # Only the server started without --no-worker registered a queue worker (the
                # other one has been up all along).
                workers = await conn.fetchval("SELECT count(*) FROM procrastinate_workers")
                assert workers == 1, "\n".join(api_only.output)
    finally:
        await conn.close()


async def test_provider_delivery_retries_run_on_the_billing_clock_at_their_own_time(
    make_api: MakeApi, clean_database: TestDatabase
) -> None:
    fake = FakePayApi()
    async with make_api(
        plugins=[FakePlugin()],
        env=FAKE_ENV,
        billing=BillingSettings(test_clock=True),
        transports={"fakepay": fake.transport()},
    ) as api:
        start = await advance(api, START)  # years ahead of the wall clock
        await make_usd_plan(api, providerRefs=[{"provider": "fakepay", "ref": "price_pro"}])
        customer = await make_customer(api, "p2")
        created = await api.admin(
            """mutation($input: CreateCheckoutInput!) { createCheckout(input: $input) {
                 checkout { id } userErrors { code } } }""",
            {"input": {"customerId": customer, "planCode": "pro", "provider": "fakepay"}},
        )
        checkout_id = created["createCheckout"]["checkout"]["id"]
        body, headers = pay_event(
            "checkout.completed",
            start.isoformat(),
            "evt_retry",
            provider_checkout_id="fcs_x",
            amount_total=3000,
            currency="USD",
        )
        assert (await api.post_webhook("fakepay", body, headers)).status_code == 200
        conn = await asyncpg.connect(clean_database.url)
        try:
            failed = await conn.fetchrow(
                "SELECT status, next_attempt_at FROM webhook_deliveries "
                "WHERE event_id = 'evt_retry'"
            )
            assert failed["status"] == "failed"
            assert failed["next_attempt_at"] == start + timedelta(seconds=30)  # billing time
            await conn.execute(
                "UPDATE checkouts SET provider_checkout_id = 'fcs_x' WHERE id = $1",
                uuid.UUID(checkout_id),
            )
            # A day later in one call: the clock stops at the retry, which runs then.
            await advance(api, start + timedelta(days=1))
            done = await conn.fetchrow(
                "SELECT status, applied_at FROM webhook_deliveries WHERE event_id = 'evt_retry'"
            )
        finally:
            await conn.close()
        assert done["status"] == "applied"
        assert done["applied_at"] == start + timedelta(seconds=30)
