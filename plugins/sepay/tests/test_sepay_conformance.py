"""The shared provider conformance suite, run against SePay and its fake.

A checkout is paid by two transfers (part of the amount with the reference as SePay's ``code``,
then the rest with ``code: null`` and the reference only in the memo), so the suite's
redelivery and reordering tests exercise partial payments too. SePay authenticates with an API
key header that signs no bytes and carries no time: no tamper or staleness tests apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

import billing_gql_sepay.plugin
from billing_gql.testing import ConformanceContext, Delivery, ProviderConformance
from billing_gql_sepay.testing import FakeSePay


class TestSePayConformance(ProviderConformance):
    provider = "sepay"
    currency = "VND"
    price = "199000"
    trials = False  # a trial starts with no transfer at all: test_sepay_renewals.py covers it
    signs_body = False
    signature_max_age = None

    def plugins(self) -> Sequence[object]:
        return [billing_gql_sepay.plugin]

    def make_fake(self) -> FakeSePay:
        return FakeSePay()

    def env(self, fake: FakeSePay) -> Mapping[str, str]:
        return fake.env()

    def transport(self, fake: FakeSePay) -> httpx.AsyncBaseTransport:
        return fake.transport()

    def checkout_input(self) -> dict[str, Any]:
        return {}  # no hosted page to come back from

    async def complete_checkout(
        self, ctx: ConformanceContext, checkout: Mapping[str, Any]
    ) -> Sequence[Delivery]:
        fake: FakeSePay = ctx.fake
        instructions = checkout["bankTransfer"]
        assert instructions is not None and checkout["url"] is None
        assert instructions["accountNumber"] == fake.account_number
        due = int(instructions["amount"]["amount"])
        reference = instructions["reference"]
        first = fake.transfer(due // 2, f"{reference} thanh toan dot 1")
        rest = fake.transfer(due - due // 2, f"CHUYEN TIEN {reference.lower()} DOT 2", code=None)
        return [self._delivery(fake.delivery(t)) for t in (first, rest)]

    async def forge_completion(
        self, ctx: ConformanceContext, checkout: Mapping[str, Any], variant: str
    ) -> Sequence[Delivery] | None:
        """A transfer quoting the checkout's reference with one đồng less than it asks
        (a transfer has no session id, and SePay moves only VND)."""
        if variant != "underpaid":
            return None
        fake: FakeSePay = ctx.fake
        instructions = checkout["bankTransfer"]
        due = int(instructions["amount"]["amount"])
        txn = fake.transfer(due - 1, f"{instructions['reference']} thanh toan")
        return [self._delivery(fake.delivery(txn))]

    async def unrelated_delivery(self, ctx: ConformanceContext) -> Delivery:
        """Money leaving the account: SePay reports it, billing-gql ignores it."""
        fake: FakeSePay = ctx.fake
        txn = fake.transfer(500_000, "tra tien nha cung cap", transfer_type="out")
        return self._delivery(fake.delivery(txn))

    @staticmethod
    def _delivery(delivery: Any) -> Delivery:
        return Delivery(delivery.body, dict(delivery.headers))

    def sign(
        self,
        ctx: ConformanceContext,
        delivery: Delivery,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> Delivery:
        key = secret if secret is not None else ctx.fake.api_key
        return Delivery(delivery.body, {**delivery.headers, "authorization": f"Apikey {key}"})
