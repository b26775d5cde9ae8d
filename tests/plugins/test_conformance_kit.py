"""The conformance kit fits a bank-transfer provider too: the engine's ``fakebank`` (checkouts
carry transfer instructions; completion is a transfer webhook with the payment reference;
credentials are an API key header that does not sign the body) runs the same suite."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fakes import BANK_KEY, FAKE_ENV, FakePlugin, bank_transfer

from billing_gql.money import parse_major
from billing_gql.testing import ConformanceContext, Delivery, ProviderConformance


class TestBankTransferConformance(ProviderConformance):
    provider = "fakebank"
    currency = "VND"
    price = "199000"
    trials = False
    signs_body = False  # Authorization: Apikey … covers no bytes of the body
    signature_max_age = None  # and carries no time

    def plugins(self) -> Sequence[object]:
        return [FakePlugin()]

    def make_fake(self) -> Any:
        return itertools.count(228478)  # the bank's transaction ids

    def env(self, fake: Any) -> Mapping[str, str]:
        return FAKE_ENV

    async def complete_checkout(
        self, ctx: ConformanceContext, checkout: Mapping[str, Any]
    ) -> Sequence[Delivery]:
        instructions = checkout["bankTransfer"]
        assert instructions is not None and checkout["url"] is None
        amount = parse_major(instructions["amount"]["amount"], instructions["amount"]["currency"])
        body, headers = bank_transfer(
            next(ctx.fake),
            amount,
            instructions["reference"],
            datetime.now(UTC).isoformat(),
            memo=f"{instructions['reference']} thanh toan",
        )
        return [Delivery(body, headers)]

    def sign(
        self,
        ctx: ConformanceContext,
        delivery: Delivery,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> Delivery:
        return Delivery(
            delivery.body, {**delivery.headers, "authorization": f"Apikey {secret or BANK_KEY}"}
        )
