"""SePay deliveries that must not count as they are (issue #11, holes 9 and 10): a bank
reference seen again with another amount, transfers SePay's API does not confirm, deliveries
from addresses outside ``ALLOWED_IPS``, and amounts past the bound."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar.testing import transport as litestar_transport
from sepay_helpers import (
    PRICE,
    db_rows,
    deliveries,
    get_checkout,
    make_customer,
    make_plan,
    open_checkout,
    recorded_sleeps,
    send,
)

import billing_gql_sepay.plugin
from billing_gql import DomainEvent, ReconcileRequest, hookimpl
from billing_gql.settings import BillingSettings
from billing_gql.testing import ApiClient, TestDatabase
from billing_gql_sepay.plugin import SePayProvider
from billing_gql_sepay.testing import FakeSePay
from conftest import provider_for

ALL_PAYMENTS = """{ payments { edges { node { providerRef status flagReason
  amount { amount currency } checkout { id } } } } }"""


class Observer:
    """An observer plugin collecting the ``payment.*`` domain events the app emits."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    @hookimpl
    def on_billing_event(self, event: DomainEvent) -> None:
        if event.type.startswith("payment."):
            self.events.append(event)

    def types(self) -> list[str]:
        return [e.type for e in self.events]


@pytest.fixture
def observer() -> Observer:
    return Observer()


@pytest.fixture
def settings() -> dict[str, str]:
    """Extra ``BILLING_GQL_SEPAY_*`` settings (by short name) of the app under test."""
    return {}


@pytest.fixture
async def api(
    make_api: Any,
    fake: FakeSePay,
    billing: BillingSettings,
    observer: Observer,
    settings: dict[str, str],
) -> AsyncIterator[ApiClient]:
    async with make_api(
        plugins=[billing_gql_sepay.plugin, observer],
        env=fake.env(**settings),
        transports={"sepay": fake.transport()},
        billing=billing,
    ) as client:
        yield client


async def all_payments(api: ApiClient) -> list[dict[str, Any]]:
    data = await api.admin(ALL_PAYMENTS)
    return [e["node"] for e in data["payments"]["edges"]]


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The ASGI ``client`` address of the test client's requests (``peer[0]``; loopback)."""
    address = ["127.0.0.1"]
    parse = litestar_transport.TestClientTransport.parse_request

    def parse_request(self: Any, request: Any) -> dict[str, Any]:
        scope: dict[str, Any] = parse(self, request)
        scope["client"] = (address[0], 50000)
        return scope

    monkeypatch.setattr(litestar_transport.TestClientTransport, "parse_request", parse_request)
    yield address


async def a_checkout(api: ApiClient) -> dict[str, Any]:
    """An open SePay checkout of the ``pro`` plan (one VND price) for a Vietnamese customer."""
    await make_plan(api)
    return await open_checkout(api, await make_customer(api))


# -- hole 9: a reference seen again with another amount -------------------------------------


async def test_a_reference_seen_again_with_another_amount_is_flagged_not_counted_nor_lost(
    api: ApiClient, fake: FakeSePay, observer: Observer
) -> None:
    checkout = await a_checkout(api)
    reference = checkout["bankTransfer"]["reference"]
    first = fake.transfer(50_000, f"{reference} thanh toan", reference_code="FT26001ABC")
    second = fake.transfer(149_000, f"{reference} thanh toan", reference_code="ft26001abc ")
    for txn in (first, second, second):  # the second one twice: SePay retries it
        assert (await send(api, fake.delivery(txn))).status_code == 200

    # Not counted twice: only the first transfer is money paid on the checkout ...
    after = await get_checkout(api, checkout["id"])
    assert after["status"] == "OPEN" and after["amountPaid"]["amount"] == "50000"
    # ... and not lost: the second is kept, flagged, once, with the reason.
    by_status = {p["status"]: p for p in await all_payments(api)}
    assert set(by_status) == {"succeeded", "flagged"}
    assert by_status["succeeded"]["providerRef"] == "FT26001ABC"
    flagged = by_status["flagged"]
    assert flagged["amount"] == {"amount": "149000", "currency": "VND"}
    assert flagged["checkout"] is None
    assert flagged["flagReason"] == "reference FT26001ABC was already received with 50000 VND"
    assert observer.types() == ["payment.succeeded", "payment.flagged"]
    assert sorted(d["status"] for d in await deliveries(api)) == ["applied", "applied"]

    # The same amount again (a replay under another id) is a plain repeat: nothing new.
    again = fake.transfer(50_000, f"{reference} thanh toan", reference_code="FT26001ABC")
    assert (await send(api, fake.delivery(again))).status_code == 200
    assert len(await all_payments(api)) == 2
    assert observer.types() == ["payment.succeeded", "payment.flagged"]


# -- hole 9: confirmation through SePay's API -------------------------------------------------


@pytest.mark.parametrize("settings", [{"CONFIRM_TRANSFERS": "1"}])
async def test_confirmed_transfers_count_and_unconfirmed_ones_are_flagged(
    api: ApiClient, fake: FakeSePay, observer: Observer
) -> None:
    checkout = await a_checkout(api)
    reference = checkout["bankTransfer"]["reference"]

    # A forged delivery: an id SePay never had, with a valid key.
    ghost = fake.transfer(PRICE, f"{reference} thanh toan")
    fake.transactions.remove(ghost)
    assert (await send(api, fake.delivery(ghost))).status_code == 200
    # A real transfer of 1,000 VND whose delivery claims the full price.
    small = fake.transfer(1_000, f"{reference} thanh toan")
    assert (await send(api, fake.delivery(small, transferAmount=PRICE))).status_code == 200
    # A real transfer to another of the company's accounts, claimed as ours.
    elsewhere = fake.transfer(PRICE, f"{reference} thanh toan", account_number="1900123456")
    forged = fake.delivery(elsewhere, accountNumber=fake.account_number)
    assert (await send(api, forged)).status_code == 200

    after = await get_checkout(api, checkout["id"])
    assert after["status"] == "OPEN" and after["amountPaid"]["amount"] == "0"
    reasons = {p["flagReason"] for p in await all_payments(api)}
    assert reasons == {
        f"SePay's API does not know transaction {ghost.id}",
        f"SePay's API knows transaction {elsewhere.id} with another account",
        f"SePay's API knows transaction {small.id} with another amount (1000 VND)",
    }
    assert observer.types() == ["payment.flagged"] * 3
    details = [r for r in fake.requests if "/details/" in r.url.path]
    assert [r.url.path for r in details] == [
        f"/userapi/transactions/details/{t.id}" for t in (ghost, small, elsewhere)
    ]
    assert all(r.url.host == "my.sepay.vn" for r in details)

    # The genuine transfer, confirmed, counts.
    paid = fake.pay(reference, PRICE)
    assert (await send(api, fake.delivery(paid))).status_code == 200
    assert (await get_checkout(api, checkout["id"]))["status"] == "COMPLETED"
    assert observer.types()[-1] == "payment.succeeded"


@pytest.mark.parametrize("settings", [{"CONFIRM_TRANSFERS": "1"}])
async def test_an_api_outage_leaves_the_delivery_to_retry(
    api: ApiClient, fake: FakeSePay, observer: Observer
) -> None:
    checkout = await a_checkout(api)
    paid = fake.pay(checkout["bankTransfer"]["reference"], PRICE)
    waits = recorded_sleeps(api.http.app.state.runtime)  # type: ignore[attr-defined]
    fake.outage(times=5)  # every attempt of the client
    assert (await send(api, fake.delivery(paid))).status_code == 200
    assert len(waits) == 4
    [delivery] = await deliveries(api)
    assert delivery["status"] == "failed" and "SePay API answered 503" in delivery["error"]
    assert (await get_checkout(api, checkout["id"]))["amountPaid"]["amount"] == "0"
    assert await all_payments(api) == [] and observer.types() == []
    # SePay retries; the API is back: the transfer is confirmed and counted once.
    assert (await send(api, fake.delivery(paid))).status_code == 200
    assert (await get_checkout(api, checkout["id"]))["status"] == "COMPLETED"
    assert [p["status"] for p in await all_payments(api)] == ["succeeded"]


def test_confirmation_needs_the_api_token(fake: FakeSePay, sleeps: list[float]) -> None:
    with pytest.raises(ValueError, match="CONFIRM_TRANSFERS needs BILLING_GQL_SEPAY_API_TOKEN"):
        provider_for(fake, sleeps, API_TOKEN="", CONFIRM_TRANSFERS="1")
    with pytest.raises(ValueError, match=r"ALLOWED_IPS: 'sepay\.vn' is not an IP address"):
        provider_for(fake, sleeps, ALLOWED_IPS="127.0.0.1,sepay.vn")


# -- hole 9: the sender allow-list --------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"ALLOWED_IPS": "127.0.0.1, 127.0.1.0/24"}])
async def test_deliveries_from_outside_the_allow_list_get_403_and_nothing_is_stored(
    api: ApiClient, fake: FakeSePay, peer: list[str], clean_database: TestDatabase
) -> None:
    checkout = await a_checkout(api)
    paid = fake.pay(checkout["bankTransfer"]["reference"], PRICE)
    for address in ("127.0.0.2", "::1"):
        peer[0] = address
        response = await send(api, fake.delivery(paid))
        assert response.status_code == 403, response.text
        assert response.json() == {"ok": False, "error": "sender address not allowed"}
    # A forwarded-for header is not trusted without TRUSTED_PROXIES.
    spoofed = fake.delivery(paid)
    headers = {**spoofed.headers, "x-forwarded-for": "127.0.0.1"}
    assert (await api.post_webhook("sepay", spoofed.body, headers)).status_code == 403
    inbox = await db_rows(clean_database.url, "SELECT count(*) AS n FROM webhook_deliveries")
    assert inbox == [{"n": 0}]

    peer[0] = "127.0.1.7"  # inside the CIDR block
    assert (await send(api, fake.delivery(paid))).status_code == 200
    assert (await get_checkout(api, checkout["id"]))["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "settings", [{"ALLOWED_IPS": "127.0.0.5", "TRUSTED_PROXIES": "127.0.0.1,127.0.0.2"}]
)
@pytest.mark.parametrize(
    ("forwarded", "status"),
    [
        ("127.0.0.5", 200),
        ("127.0.0.5, 127.0.0.2", 200),  # through two proxies of ours
        ("127.0.0.9, 127.0.0.5", 200),  # the left entry is whatever the sender claimed
        ("127.0.0.5, 127.0.0.9", 403),  # the hop our proxy saw is .9
        ("", 403),  # the proxy itself is not SePay
    ],
)
async def test_behind_a_trusted_proxy_the_forwarded_sender_is_checked(
    api: ApiClient, fake: FakeSePay, peer: list[str], forwarded: str, status: int
) -> None:
    delivery = fake.delivery(fake.transfer(PRICE, "khong ma"))
    headers = {**delivery.headers, "x-forwarded-for": forwarded}
    response = await api.post_webhook("sepay", delivery.body, headers)
    assert response.status_code == status, response.text


# -- hole 10: absurd amounts ---------------------------------------------------------------------


async def test_an_amount_past_the_bound_is_refused_with_400_and_not_stored(
    api: ApiClient, fake: FakeSePay, clean_database: TestDatabase
) -> None:
    checkout = await a_checkout(api)
    txn = fake.pay(checkout["bankTransfer"]["reference"], PRICE)
    for amount in (10**19, 10**12 + 1):
        response = await send(api, fake.delivery(txn, transferAmount=amount))
        assert response.status_code == 400, response.text
        assert "transferAmount is more than 1000000000000 VND" in response.json()["error"]
    inbox = await db_rows(clean_database.url, "SELECT count(*) AS n FROM webhook_deliveries")
    assert inbox == [{"n": 0}]
    assert (await send(api, fake.delivery(txn))).status_code == 200
    assert (await get_checkout(api, checkout["id"]))["status"] == "COMPLETED"


async def test_reconciliation_skips_an_amount_past_the_bound(
    sepay: SePayProvider, fake: FakeSePay
) -> None:
    fake.transfer(10**19, "BGABCDEFGH thanh toan")
    kept = fake.transfer(PRICE, "BGABCDEFGH thanh toan")
    result = await sepay.reconcile(ReconcileRequest([], {}, datetime.now(UTC)))
    assert [e.payment.provider_ref for e in result.events if e.payment] == [kept.reference_code]
