"""Reconciliation from SePay's user API: missed webhooks applied once (whichever comes first),
paging, rate limits, the cursor kept between runs, the CLI and the worker's schedule."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sepay_helpers import (
    PRICE,
    db_rows,
    deliver,
    get_checkout,
    iso,
    make_customer,
    make_plan,
    open_checkout,
    payments,
    recorded_sleeps,
    send,
    set_clock,
    unmatched,
)

import billing_gql_sepay.plugin
from billing_gql import UserInputError
from billing_gql.cli import main
from billing_gql.runtime import Runtime
from billing_gql.settings import BillingSettings, Settings
from billing_gql.subscriptions.reconcile import reconcile_provider
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql_sepay.testing import FakeSePay
from conftest import ROUTES


@asynccontextmanager
async def sepay_runtime(
    app_settings: Settings, fake: FakeSePay, **env: str
) -> AsyncIterator[Runtime]:
    """A runtime like a worker's, on the test database, with SePay against the fake."""
    settings = replace(
        app_settings,
        plugins=replace(app_settings.plugins, env=fake.env(**env)),
        billing=BillingSettings(manual_provider=True, routes=ROUTES),
    )
    runtime = await Runtime.start(
        settings,
        extra_plugins=[billing_gql_sepay.plugin],
        transports={"sepay": fake.transport()},
        http_options={"backoff": 0.0, "max_retry_wait": 0.05},
        apply_migrations=False,
    )
    try:
        yield runtime
    finally:
        await runtime.close()


async def test_a_missed_webhook_is_applied_once_by_reconciliation(
    api: ApiClient, fake: FakeSePay, app_settings: Settings
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    reference = checkout["bankTransfer"]["reference"]
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    missed = fake.transfer(PRICE, f"{reference} thanh toan", at=at)  # SePay's webhook is lost
    async with sepay_runtime(app_settings, fake) as runtime:
        report = await reconcile_provider(runtime, "sepay")
        again = await reconcile_provider(runtime, "sepay")
    [recorded] = report.payments
    assert recorded.provider_ref == missed.reference_code and recorded.status == "succeeded"
    assert recorded.checkout_id == checkout["id"] and recorded.checkout_completed
    assert recorded.describe() == (
        f"payment {missed.reference_code}: 199000 VND to checkout {checkout['id']}, completing it"
    )
    assert again.payments == []
    done = await get_checkout(api, checkout["id"])
    assert done["status"] == "COMPLETED" and done["subscription"]["status"] == "ACTIVE"
    assert done["amountPaid"]["amount"] == "199000"
    [payment] = await payments(api, customer)
    assert iso(payment["receivedAt"]) == at  # the bank's time, not the run's

    # SePay's retry of the lost webhook finally arrives: accepted, and a no-op.
    response = await send(api, fake.delivery(missed))
    assert response.status_code == 200 and response.json()["success"] is True
    assert await get_checkout(api, checkout["id"]) == done
    assert len(await payments(api, customer)) == 1


async def test_a_transfer_already_delivered_is_not_counted_again(
    api: ApiClient, fake: FakeSePay, app_settings: Settings
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    reference = checkout["bankTransfer"]["reference"]
    await deliver(api, fake, 100_000, f"{reference} dot 1")
    async with sepay_runtime(app_settings, fake) as runtime:
        report = await reconcile_provider(runtime, "sepay")
    assert report.events == 1 and report.payments == []
    partial = await get_checkout(api, checkout["id"])
    assert partial["status"] == "OPEN" and partial["amountPaid"]["amount"] == "100000"


async def test_reconciliation_pages_keeps_its_cursor_and_records_unmatched_money(
    api: ApiClient, fake: FakeSePay, app_settings: Settings, clean_database: TestDatabase
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    reference = checkout["bankTransfer"]["reference"]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    for i in range(230):  # other people's transfers to the shop: kept unmatched
        fake.transfer(1_000 + i, f"chuyen tien {i}", at=start + timedelta(seconds=i))
    fake.transfer(50_000, "rut tien", transfer_type="out", at=start)
    fake.transfer(PRICE, f"{reference} thanh toan", account_number="999888777", at=start)
    fake.transfer(PRICE, f"{reference}", reference_code=None, at=start)  # v2: no safe key
    paying = fake.transfer(PRICE, f"{reference} thanh toan", code=None, at=start)
    async with sepay_runtime(app_settings, fake) as runtime:
        fake.rate_limit(retry_after=1)
        fake.rate_limit(retry_after=2, header="x-sepay-userapi-retry-after")
        waits = recorded_sleeps(runtime)
        report = await reconcile_provider(runtime, "sepay")
        assert waits == [1.0, 2.0]
        pages = [r for r in fake.requests if r.url.path == "/v2/transactions"]
        assert [r.url.params["page"] for r in pages] == ["1", "1", "1", "2", "3"]
        assert {r.url.params["per_page"] for r in pages} == {"100"}
        # The first run reads the last three days, in Vietnam time.
        first_from = datetime.fromisoformat(pages[0].url.params["transaction_date_from"])
        assert first_from.tzinfo is None
        assert report.events == 231 and len(report.payments) == 231
        assert sum(p.status == "unmatched" for p in report.payments) == 230
        [state] = await db_rows(clean_database.url, "SELECT * FROM reconcile_state")
        assert state["provider"] == "sepay" and state["last_error"] is None
        # The cursor is the newest transfer seen less an overlap, in SePay's format.
        newest = start + timedelta(seconds=229)
        cursor = json.loads(state["cursor"])  # a plain connection: JSONB as text
        assert cursor == {
            "since": (newest - timedelta(hours=6) + timedelta(hours=7)).strftime(
                "%Y-%m-%d %H:%M:%S"
            )
        }
        fake.requests.clear()
        again = await reconcile_provider(runtime, "sepay")
        assert again.payments == []
        assert fake.requests[0].url.params["transaction_date_from"] == cursor["since"]
    done = await get_checkout(api, checkout["id"])
    assert done["status"] == "COMPLETED" and done["amountPaid"]["amount"] == "199000"
    assert [p["providerRef"] for p in await payments(api, customer)] == [paying.reference_code]
    assert len(await unmatched(api)) == 50  # the first page of them
    counted = await db_rows(
        clean_database.url, "SELECT count(*) AS n FROM payments WHERE status = 'unmatched'"
    )
    assert counted == [{"n": 230}]


async def test_the_legacy_v1_answer_is_read_too(
    api: ApiClient, fake: FakeSePay, app_settings: Settings
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    fake.api_shape = "v1"
    fake.pay(checkout["bankTransfer"]["reference"], PRICE)
    async with sepay_runtime(app_settings, fake) as runtime:
        report = await reconcile_provider(runtime, "sepay")
    assert [p.status for p in report.payments] == ["succeeded"]
    assert (await get_checkout(api, checkout["id"]))["status"] == "COMPLETED"


async def test_reconciliation_failures_change_nothing_and_name_no_secret(
    api: ApiClient, fake: FakeSePay, app_settings: Settings, clean_database: TestDatabase
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    fake.pay(checkout["bankTransfer"]["reference"], PRICE)
    async with sepay_runtime(app_settings, fake, API_TOKEN="wrong-token-abcdef") as runtime:
        with pytest.raises(UserInputError) as caught:
            await reconcile_provider(runtime, "sepay")
    assert caught.value.code == "PROVIDER_ERROR"
    assert "wrong-token-abcdef" not in caught.value.message
    async with sepay_runtime(app_settings, fake) as runtime:
        fake.rate_limit(times=10)
        recorded_sleeps(runtime)
        with pytest.raises(UserInputError) as caught:
            await reconcile_provider(runtime, "sepay")
    assert caught.value.code == "PROVIDER_UNAVAILABLE"
    assert (await get_checkout(api, checkout["id"]))["status"] == "OPEN"
    assert await db_rows(clean_database.url, "SELECT * FROM reconcile_state") == []
    async with sepay_runtime(app_settings, fake, API_TOKEN="") as runtime:
        with pytest.raises(UserInputError) as caught:
            await reconcile_provider(runtime, "sepay")
    assert caught.value.code == "NOT_SUPPORTED"
    assert "BILLING_GQL_SEPAY_API_TOKEN" in caught.value.message


async def test_the_cli_reconciles_through_the_entry_point(
    api: ApiClient,
    fake: FakeSePay,
    clean_database: TestDatabase,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkout = await open_checkout(api, customer)
    missed = fake.pay(checkout["bankTransfer"]["reference"], PRICE)
    stray = fake.transfer(20_000, "tien cafe")
    with fake.serve() as url:
        monkeypatch.setenv("DATABASE_URL", clean_database.url)
        monkeypatch.setenv("BILLING_GQL_PLUGINS", "sepay")
        for key, value in fake.env(API_BASE=url).items():
            monkeypatch.setenv(key, value)
        # The CLI runs its own event loop: give it a thread.
        assert await asyncio.to_thread(main, ["reconcile", "sepay"]) == 0
        first = capsys.readouterr()
        assert await asyncio.to_thread(main, ["reconcile", "sepay"]) == 0
        second = capsys.readouterr()
    assert first.out.splitlines() == [
        f"payment {missed.reference_code}: 199000 VND to checkout {checkout['id']}, completing it",
        f"payment {stray.reference_code}: 20000 VND to no checkout (unmatched)",
        "reconciled sepay: 0 subscriptions checked, 0 changed, 2 payments recorded",
    ]
    assert second.out == "reconciled sepay: 1 subscription checked, 0 changed\n"
    assert fake.api_token not in first.err + second.err
    assert (await get_checkout(api, checkout["id"]))["status"] == "COMPLETED"


async def test_the_worker_reconciles_on_its_schedule(
    make_api,
    fake: FakeSePay,
    clean_database: TestDatabase,  # type: ignore[no-untyped-def]
) -> None:
    t0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    await set_clock(clean_database.url, t0)
    billing = BillingSettings(manual_provider=True, routes=ROUTES, test_clock=True)
    advance = "mutation($to: DateTime!) { advanceClock(to: $to) { now userErrors { code } } }"
    async with make_api(
        plugins=[billing_gql_sepay.plugin],
        env=fake.env(RECONCILE_MINUTES="15"),
        transports={"sepay": fake.transport()},
        billing=billing,
    ) as api:
        await make_plan(api)
        customer = await make_customer(api)
        checkout = await open_checkout(api, customer)
        fake.pay(checkout["bankTransfer"]["reference"], PRICE, at=t0 - timedelta(minutes=5))

        async def runs() -> int:
            return len([r for r in fake.requests if r.url.path == "/v2/transactions"])

        async def state() -> dict[str, object]:
            [row] = await db_rows(clean_database.url, "SELECT * FROM reconcile_state")
            return row

        await api.admin(advance, {"to": (t0 + timedelta(minutes=2)).isoformat()})
        assert await runs() == 1  # the first tick reconciles at once
        assert (await get_checkout(api, checkout["id"]))["status"] == "COMPLETED"
        assert (await state())["next_run_at"] == t0 + timedelta(minutes=15)
        await api.admin(advance, {"to": (t0 + timedelta(minutes=14)).isoformat()})
        assert await runs() == 1  # not due yet
        token = fake.api_token
        fake.api_token = "rotated-token"  # SePay now refuses the configured token
        await api.admin(advance, {"to": (t0 + timedelta(minutes=15)).isoformat()})
        assert await runs() == 2
        failed = await state()
        assert "refused the API token" in str(failed["last_error"])
        assert token not in str(failed["last_error"])
        assert failed["next_run_at"] == t0 + timedelta(minutes=30)
        fake.api_token = token
        await api.admin(advance, {"to": (t0 + timedelta(minutes=31)).isoformat()})
        assert await runs() == 3 and (await state())["last_error"] is None


async def test_a_webhook_racing_a_reconciliation_counts_once(
    api: ApiClient, fake: FakeSePay, app_settings: Settings, clean_database: TestDatabase
) -> None:
    await make_plan(api)
    customer = await make_customer(api)
    checkouts = [await open_checkout(api, customer) for _ in range(4)]
    transfers = []
    for checkout in checkouts:  # a partial payment each: a double count would show
        transfers.append(fake.pay(checkout["bankTransfer"]["reference"], 150_000))
    transfers.append(fake.transfer(7_000, "khong co ma"))  # and money matching nothing
    async with sepay_runtime(app_settings, fake) as runtime:

        async def webhooks() -> None:
            for txn in transfers:
                assert (await send(api, fake.delivery(txn))).status_code == 200

        await asyncio.gather(webhooks(), reconcile_provider(runtime, "sepay"))
        await asyncio.gather(webhooks(), reconcile_provider(runtime, "sepay"))
    for checkout in checkouts:
        after = await get_checkout(api, checkout["id"])
        assert after["status"] == "OPEN" and after["amountPaid"]["amount"] == "150000"
    rows = await db_rows(
        clean_database.url,
        "SELECT provider_ref, status FROM payments ORDER BY provider_ref",
    )
    assert rows == sorted(
        [{"provider_ref": t.reference_code, "status": "succeeded"} for t in transfers[:4]]
        + [{"provider_ref": transfers[4].reference_code, "status": "unmatched"}],
        key=lambda r: str(r["provider_ref"]),
    )


async def test_reconcile_is_offered_only_with_an_api_token(
    make_api: Any, fake: FakeSePay, app_settings: Settings
) -> None:
    query = "{ providers { name configured capabilities } }"
    async with make_api(
        plugins=[billing_gql_sepay.plugin],
        env=fake.env(api=False),
        transports={"sepay": fake.transport()},
    ) as bare:
        [sepay] = (await bare.gql(query)).ok()["providers"]
    assert sepay == {
        "name": "sepay",
        "configured": True,
        "capabilities": ["bank_transfer", "checkout"],
    }
    async with make_api(
        plugins=[billing_gql_sepay.plugin], env=fake.env(), transports={"sepay": fake.transport()}
    ) as full:
        [sepay] = (await full.gql(query)).ok()["providers"]
    assert sepay["capabilities"] == ["bank_transfer", "checkout", "reconcile"]
    async with sepay_runtime(app_settings, fake, API_TOKEN="") as runtime:
        provider = runtime.providers.get_configured("sepay")
        assert provider is not None and not provider.supports("reconcile")
