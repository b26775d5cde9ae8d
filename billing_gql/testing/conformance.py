"""The provider conformance suite: generic tests every provider plugin inherits.

A provider package subclasses :class:`ProviderConformance` in one test module, supplies its
plugin, settings, fake provider API and signer, and implements a few *scenario hooks* — the
only provider-specific part ("make the provider complete this checkout and return the
deliveries it would send"). The inherited tests then drive billing-gql over HTTP (GraphQL and
``/webhooks/{provider}``) against a real database and assert provider-independent outcomes:

- a checkout round trip: ``createCheckout`` → the provider's API → its deliveries → checkout
  COMPLETED, subscription ACTIVE (TRIALING with a trial), entitlements granted;
- bad, missing, tampered and stale (or, where the provider says so, future-dated)
  signatures are answered 401 and change nothing (no delivery stored, the checkout still
  OPEN);
- the same deliveries sent twice have one effect, every answer 2xx;
- deliveries in reverse order end in the same state; an older state delivered after a newer
  one does not win;
- no secret setting, admin key or session token reaches the log (at DEBUG);
- a forged completion (another provider session naming our checkout, too little, another
  currency) leaves the checkout OPEN and grants nothing (:meth:`forge_completion`);
- subscription operations reach the provider; provider errors become ``userErrors`` with
  nothing half-written; event types billing-gql does not use are acknowledged and ignored.

A scenario hook that returns ``None`` (or a capability flag left off) skips the tests that
need it, so a bank-transfer provider (checkout returns ``bankTransfer`` instructions, the
completion is a transfer webhook carrying the payment reference) and a hosted-checkout one fit
the same suite. Example (the Stripe plugin's, abridged)::

    from billing_gql.testing import Delivery, ProviderConformance, PlanSpec

    class TestStripeConformance(ProviderConformance):
        provider = "stripe"

        def plugins(self): return [billing_gql_stripe.plugin]
        def make_fake(self): return FakeStripe()
        def env(self, fake): return fake.env()
        def transport(self, fake): return fake.transport()
        def plan_refs(self, fake, plan):
            price = fake.create_price(unit_amount=plan.amount_minor, ...)
            return [{"provider": "stripe", "ref": price, "currency": plan.currency}]
        async def complete_checkout(self, ctx, checkout):
            ctx.fake.complete_checkout(ctx.fake.session_for(checkout["id"])["id"])
            return self.deliveries(ctx.fake)
        def sign(self, ctx, delivery, *, secret=None, timestamp=None): ...
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import asyncpg
import httpx
import pytest

from billing_gql.money import parse_major
from billing_gql.settings import BillingSettings
from billing_gql.testing.client import ApiClient
from billing_gql.testing.database import TestDatabase

__all__ = ["ConformanceContext", "Delivery", "PlanSpec", "ProviderConformance"]

FEATURES = [{"feature": "seats", "limit": "5"}, {"feature": "export", "enabled": True}]
"""The features every conformance plan grants; entitlements are checked against them."""

_USER_ERRORS = "userErrors { field message code }"
_SUBSCRIPTION = """id status provider providerSubscriptionId currency quantity
  currentPeriodStart currentPeriodEnd trialEnd cancelAtPeriodEnd canceledAt plan { code }"""
_CHECKOUT = f"""id status provider url expiresAt
  amount {{ amount currency }} amountPaid {{ amount currency }}
  customer {{ id externalId }} plan {{ code }}
  subscription {{ {_SUBSCRIPTION} }}
  bankTransfer {{ bankCode accountNumber accountName reference qrCodeUrl
                  amount {{ amount currency }} }}"""
_CREATE_PLAN = f"""mutation($input: CreatePlanInput!) {{ createPlan(input: $input) {{
  plan {{ id code }} {_USER_ERRORS} }} }}"""
_UPSERT = f"""mutation($input: UpsertCustomerInput!) {{ upsertCustomer(input: $input) {{
  customer {{ id }} {_USER_ERRORS} }} }}"""
_CREATE_CHECKOUT = f"""mutation($input: CreateCheckoutInput!) {{ createCheckout(input: $input) {{
  checkout {{ {_CHECKOUT} }} {_USER_ERRORS} }} }}"""
_CHECKOUT_QUERY = f"query($id: ID!) {{ checkout(id: $id) {{ {_CHECKOUT} }} }}"
_STATE = f"""query($c: ID!) {{
  subscriptions(customerId: $c) {{ edges {{ node {{ {_SUBSCRIPTION} }} }} }}
  payments(customerId: $c) {{
    edges {{ node {{ providerRef status amount {{ amount currency }} }} }} }}
  entitlements(customerId: $c) {{ feature enabled limit }}
}}"""
_CANCEL = f"""mutation($id: ID!, $end: Boolean!) {{
  cancelSubscription(input: {{subscriptionId: $id, atPeriodEnd: $end}}) {{
    subscription {{ {_SUBSCRIPTION} }} {_USER_ERRORS} }} }}"""
_RESUME = f"""mutation($id: ID!) {{ resumeSubscription(subscriptionId: $id) {{
  subscription {{ {_SUBSCRIPTION} }} {_USER_ERRORS} }} }}"""
_PROVIDERS = "{ providers { name configured capabilities } }"
_REFUND = f"""mutation($i: RefundPaymentInput!) {{ refundPayment(input: $i) {{
  refund {{ id status amount {{ amount currency }}
    payment {{ id amount {{ amount currency }} amountRefunded {{ amount currency }} }} }}
  {_USER_ERRORS} }} }}"""
_PAYMENT_IDS = """query($c: ID!) { payments(customerId: $c) { nodes { id status
  amount { amount currency } amountRefunded { amount currency } } } }"""
_SESSION = "mutation($id: ID!) { createCustomerSession(customerId: $id) { token } }"

_LIVE = ("ACTIVE", "TRIALING")
_WRONG_SECRET = "whsec_" + "0" * 32  # deliberately not the configured secret


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery: the raw body and the headers, exactly as the provider sends it."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanSpec:
    """A plan the suite is about to create; :meth:`ProviderConformance.plan_refs` answers
    with the provider references it needs (creating prices/products in the fake)."""

    code: str
    interval: str
    """``MONTH`` or ``ONE_TIME``."""
    trial_days: int
    currency: str
    amount: str
    """Major units, as GraphQL takes it (``"29.00"``)."""
    amount_minor: int


@dataclass
class ConformanceContext:
    """What a scenario hook gets: the app, the fake provider, and helpers."""

    api: ApiClient
    fake: Any
    """Whatever :meth:`ProviderConformance.make_fake` returned (fresh for each test)."""
    provider: str
    db_url: str

    async def post(self, delivery: Delivery) -> httpx.Response:
        """Send one delivery to ``/webhooks/{provider}``."""
        return await self.api.post_webhook(self.provider, delivery.body, dict(delivery.headers))

    async def post_all(self, deliveries: Sequence[Delivery], status: int = 200) -> None:
        """Send deliveries in order, asserting each answer's status."""
        for delivery in deliveries:
            response = await self.post(delivery)
            assert response.status_code == status, (response.status_code, response.text)

    async def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Rows straight from the database (for what GraphQL does not show)."""
        conn = await asyncpg.connect(self.db_url)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()


class ProviderConformance:
    """Subclass as ``class Test<Name>Conformance(ProviderConformance)`` and fill in the hooks.

    Class attributes describe the provider; methods marked *required* must be implemented.
    Scenario hooks returning ``None`` skip the tests that need them.
    """

    provider: ClassVar[str]
    """The provider name (``/webhooks/{provider}``)."""
    currency: ClassVar[str] = "USD"
    price: ClassVar[str] = "29.00"
    """The plans' price, major units in :attr:`currency`."""
    trials: ClassVar[bool] = True
    """Whether the provider runs free trials (a plan's ``trialDays``)."""
    signs_body: ClassVar[bool] = True
    """False when credentials do not cover the body (an API key header): no tamper test."""
    signature_max_age: ClassVar[int | None] = 300
    """Seconds after which a signature is stale; ``None`` when deliveries carry no time."""
    signature_max_ahead: ClassVar[int | None] = None
    """Seconds ahead of now beyond which a signature is refused (Standard Webhooks: 300);
    ``None`` when timestamps in the future are accepted (as Stripe's own library does)."""

    # -- required hooks ------------------------------------------------------------------------

    def plugins(self) -> Sequence[object]:
        """*Required.* The plugin objects to register (modules or instances)."""
        raise NotImplementedError

    def make_fake(self) -> Any:
        """*Required.* A fresh fake of the provider's API (state for one test)."""
        raise NotImplementedError

    def env(self, fake: Any) -> Mapping[str, str]:
        """*Required.* The ``BILLING_GQL_<PROVIDER>_*`` settings pointing at the fake."""
        raise NotImplementedError

    def transport(self, fake: Any) -> httpx.AsyncBaseTransport | None:
        """The httpx transport serving the fake API (``None``: the provider calls nothing)."""
        return None

    def plan_refs(self, fake: Any, plan: PlanSpec) -> list[dict[str, str]]:
        """``providerRefs`` for a plan (create the price/product in the fake). Default: none,
        for providers that need no reference (bank transfers)."""
        return []

    async def complete_checkout(
        self, ctx: ConformanceContext, checkout: Mapping[str, Any]
    ) -> Sequence[Delivery]:
        """*Required.* Act as the buyer and the provider: pay ``checkout`` (the GraphQL
        ``Checkout`` just created: ``id``, ``url``, ``amount``, ``bankTransfer`` …) and return
        the signed deliveries the provider would send, in the provider's order."""
        raise NotImplementedError

    def sign(
        self,
        ctx: ConformanceContext,
        delivery: Delivery,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> Delivery:
        """*Required.* ``delivery`` signed again: with ``secret`` instead of the configured one,
        and/or at ``timestamp`` (Unix seconds) instead of now."""
        raise NotImplementedError

    # -- optional scenario hooks ---------------------------------------------------------------

    def checkout_input(self) -> dict[str, Any]:
        """Extra ``CreateCheckoutInput`` fields."""
        return {"successUrl": "https://app.example/success", "cancelUrl": "https://app.example/"}

    def billing_settings(self) -> BillingSettings:
        return BillingSettings()

    def strip_credentials(self, delivery: Delivery) -> Delivery:
        """``delivery`` without its signature/credentials (default: only ``content-type``)."""
        return Delivery(
            delivery.body,
            {k: v for k, v in delivery.headers.items() if k.lower() == "content-type"},
        )

    async def cancel_at_provider(
        self, ctx: ConformanceContext, subscription: Mapping[str, Any], *, at_period_end: bool
    ) -> Sequence[Delivery] | None:
        """Cancel ``subscription`` at the provider (its dashboard), now or at period end, and
        return the deliveries it sends. ``None``: the provider has no such thing (skips)."""
        return None

    async def pending_deliveries(self, ctx: ConformanceContext) -> Sequence[Delivery]:
        """Deliveries the provider sends on its own after an API call (e.g. the
        ``subscription.updated`` that follows a cancel). Default: none."""
        return []

    async def unrelated_delivery(self, ctx: ConformanceContext) -> Delivery | None:
        """A correctly signed delivery of an event type billing-gql does not use (the
        provider sends many). ``None``: skip the test."""
        return None

    async def forge_completion(
        self, ctx: ConformanceContext, checkout: Mapping[str, Any], variant: str
    ) -> Sequence[Delivery] | None:
        """Correctly signed deliveries of a completion that names ``checkout`` (our id, as a
        buyer can attach it to a payment of their own) but does not pay it:

        - ``other_session``: a completion of another provider session / payment than the one
          created for ``checkout`` (e.g. Stripe's ``client_reference_id`` on a cheap Payment
          Link), paying little;
        - ``underpaid``: less than the checkout's amount, in its currency;
        - ``other_currency``: the checkout's amount in minor units, in another currency.

        ``None``: the provider cannot express that variant (skips)."""
        return None

    def fail_next_call(self, ctx: ConformanceContext, *, unavailable: bool) -> bool:
        """Make the provider's next API call fail: a refusal (4xx with a message) or, with
        ``unavailable``, an outage (5xx/429 beyond the client's retries). Return False when the
        provider makes no call that could fail (skips)."""
        return False

    def clear_failures(self, ctx: ConformanceContext) -> None:
        """Undo :meth:`fail_next_call` (default: nothing; faults are consumed by calls)."""

    # -- fixtures and helpers ------------------------------------------------------------------

    @pytest.fixture
    async def conformance(
        self, make_api: Any, clean_database: TestDatabase
    ) -> AsyncIterator[ConformanceContext]:
        """The app with only this provider's plugin registered, on a clean database."""
        fake = self.make_fake()
        transport = self.transport(fake)
        async with make_api(
            plugins=list(self.plugins()),
            env=dict(self.env(fake)),
            transports={self.provider: transport} if transport is not None else None,
            billing=self.billing_settings(),
        ) as api:
            yield ConformanceContext(api, fake, self.provider, clean_database.url)

    def plan_spec(self, *, trial_days: int = 0, interval: str = "MONTH") -> PlanSpec:
        code = f"conf_{uuid.uuid4().hex[:8]}"
        return PlanSpec(
            code=code,
            interval=interval,
            trial_days=trial_days,
            currency=self.currency,
            amount=self.price,
            amount_minor=parse_major(self.price, self.currency),
        )

    async def make_plan(self, ctx: ConformanceContext, spec: PlanSpec) -> str:
        plan = {
            "code": spec.code,
            "name": f"Conformance {spec.code}",
            "interval": spec.interval,
            "trialDays": spec.trial_days,
            "prices": [{"currency": spec.currency, "amount": spec.amount}],
            "features": FEATURES,
            "providerRefs": self.plan_refs(ctx.fake, spec),
        }
        await ctx.api.admin(_CREATE_PLAN, {"input": plan})
        return spec.code

    async def make_customer(self, ctx: ConformanceContext) -> str:
        suffix = uuid.uuid4().hex[:8]
        data = await ctx.api.admin(
            _UPSERT,
            {"input": {"externalId": f"conf_{suffix}", "email": f"buyer+{suffix}@example.com"}},
        )
        return str(data["upsertCustomer"]["customer"]["id"])

    async def create_checkout(
        self, ctx: ConformanceContext, customer_id: str, plan_code: str, **extra: Any
    ) -> dict[str, Any]:
        """``createCheckout`` as admin; returns the payload (``checkout``, ``userErrors``)."""
        payload = {
            "customerId": customer_id,
            "planCode": plan_code,
            "provider": self.provider,
            "currency": self.currency,
            **self.checkout_input(),
            **extra,
        }
        result = await ctx.api.gql(_CREATE_CHECKOUT, {"input": payload}, admin=True)
        assert result.status == 200 and not result.errors, result.body
        created: dict[str, Any] = result.data["createCheckout"]
        return created

    async def open_checkout(
        self, ctx: ConformanceContext, *, trial_days: int = 0
    ) -> tuple[str, dict[str, Any]]:
        """A customer and an OPEN checkout of a fresh plan: (customer id, checkout)."""
        plan = await self.make_plan(ctx, self.plan_spec(trial_days=trial_days))
        customer = await self.make_customer(ctx)
        payload = await self.create_checkout(ctx, customer, plan)
        assert payload["userErrors"] == [], payload["userErrors"]
        checkout: dict[str, Any] = payload["checkout"]
        assert checkout["status"] == "OPEN"
        assert checkout["provider"] == self.provider
        assert checkout["url"] or checkout["bankTransfer"], "a checkout says how to pay"
        return customer, checkout

    async def checkout(self, ctx: ConformanceContext, checkout_id: str) -> dict[str, Any]:
        data = await ctx.api.admin(_CHECKOUT_QUERY, {"id": checkout_id})
        found: dict[str, Any] = data["checkout"]
        return found

    async def state(self, ctx: ConformanceContext, customer_id: str) -> dict[str, Any]:
        """The customer's subscriptions, payments and entitlements, as GraphQL shows them."""
        data = await ctx.api.admin(_STATE, {"c": customer_id})
        return {
            "subscriptions": [e["node"] for e in data["subscriptions"]["edges"]],
            "payments": sorted(
                (e["node"] for e in data["payments"]["edges"]),
                key=lambda p: json.dumps(p, sort_keys=True),
            ),
            "entitlements": sorted(data["entitlements"], key=lambda e: e["feature"]),
        }

    async def completed(
        self, ctx: ConformanceContext, *, trial_days: int = 0
    ) -> tuple[str, dict[str, Any], list[Delivery]]:
        """A checkout completed through the provider's deliveries, sent in order."""
        customer, checkout = await self.open_checkout(ctx, trial_days=trial_days)
        deliveries = list(await self.complete_checkout(ctx, checkout))
        assert deliveries, "complete_checkout returned no deliveries"
        await ctx.post_all(deliveries)
        return customer, await self.checkout(ctx, checkout["id"]), deliveries

    async def inbox_count(self, ctx: ConformanceContext) -> int:
        rows = await ctx.rows(
            "SELECT count(*) AS n FROM webhook_deliveries WHERE provider = $1", self.provider
        )
        return int(rows[0]["n"])

    async def capabilities(self, ctx: ConformanceContext) -> set[str]:
        data = await ctx.api.admin(_PROVIDERS)
        for provider in data["providers"]:
            if provider["name"] == self.provider:
                assert provider["configured"], f"{self.provider} is not configured"
                return set(provider["capabilities"])
        raise AssertionError(f"{self.provider} is not registered")

    @staticmethod
    def assert_entitled(state: Mapping[str, Any], entitled: bool) -> None:
        by_feature = {e["feature"]: e for e in state["entitlements"]}
        if entitled:
            assert by_feature.get("seats", {}).get("enabled") is True, state["entitlements"]
            assert by_feature["seats"]["limit"] == "5"
            assert by_feature.get("export", {}).get("enabled") is True
        else:
            assert not any(e["enabled"] for e in state["entitlements"]), state["entitlements"]

    # -- the suite -----------------------------------------------------------------------------

    async def test_provider_is_registered_and_configured(
        self, conformance: ConformanceContext
    ) -> None:
        caps = await self.capabilities(conformance)
        assert "checkout" in caps

    async def test_checkout_round_trip(self, conformance: ConformanceContext) -> None:
        ctx = conformance
        customer, checkout, _ = await self.completed(ctx)
        assert checkout["status"] == "COMPLETED"
        sub = checkout["subscription"]
        assert sub is not None and sub["status"] == "ACTIVE"
        assert sub["provider"] == self.provider and sub["currency"] == self.currency
        assert sub["currentPeriodEnd"] is not None
        assert checkout["amountPaid"] == checkout["amount"]
        state = await self.state(ctx, customer)
        assert [s["id"] for s in state["subscriptions"]] == [sub["id"]]
        self.assert_entitled(state, True)

    async def test_no_secret_reaches_the_log(
        self, conformance: ConformanceContext, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A checkout round trip, a delivery without credentials, a customer session and its
        use, logged at DEBUG: no secret setting, admin key or session token in any line."""
        caplog.set_level(logging.DEBUG)
        ctx = conformance
        customer, checkout, deliveries = await self.completed(ctx)
        await ctx.post(self.strip_credentials(deliveries[0]))
        data = await ctx.api.admin(_SESSION, {"id": customer})
        token = data["createCustomerSession"]["token"]
        result = await ctx.api.gql(_CHECKOUT_QUERY, {"id": checkout["id"]}, token=token)
        assert result.data["checkout"]["id"] == checkout["id"], result.body
        secrets = {
            name: value
            for name, value in self.env(ctx.fake).items()
            if any(word in name.upper() for word in ("KEY", "SECRET", "TOKEN", "PASSWORD"))
            and len(value) >= 6
        }
        secrets.update(admin_key=ctx.api.admin_key or "", session_token=token)
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        text = "\n".join(formatter.format(record) for record in caplog.records)
        leaked = [name for name, value in secrets.items() if value and value in text]
        assert leaked == [], f"secrets in the log: {leaked}"

    async def test_trial_checkout_round_trip(self, conformance: ConformanceContext) -> None:
        if not self.trials:
            pytest.skip(f"{self.provider} runs no trials")
        ctx = conformance
        customer, checkout, _ = await self.completed(ctx, trial_days=14)
        assert checkout["status"] == "COMPLETED"
        sub = checkout["subscription"]
        assert sub is not None and sub["status"] == "TRIALING" and sub["trialEnd"] is not None
        self.assert_entitled(await self.state(ctx, customer), True)

    @pytest.mark.parametrize("variant", ["wrong_secret", "missing", "tampered", "stale", "ahead"])
    async def test_bad_signatures_are_rejected_and_change_nothing(
        self, conformance: ConformanceContext, variant: str
    ) -> None:
        ctx = conformance
        customer, checkout = await self.open_checkout(ctx)
        deliveries = list(await self.complete_checkout(ctx, checkout))
        if variant == "tampered" and not self.signs_body:
            pytest.skip(f"{self.provider} credentials do not cover the body")
        if variant == "stale" and self.signature_max_age is None:
            pytest.skip(f"{self.provider} deliveries carry no timestamp")
        if variant == "ahead" and self.signature_max_ahead is None:
            pytest.skip(f"{self.provider} accepts signatures from the future")
        for delivery in deliveries:
            if variant == "wrong_secret":
                bad = self.sign(ctx, delivery, secret=_WRONG_SECRET)
            elif variant == "missing":
                bad = self.strip_credentials(delivery)
            elif variant == "tampered":
                # Trailing whitespace keeps the JSON (and its event id) valid: only the
                # signature can tell the body changed.
                bad = Delivery(delivery.body + b"\n ", delivery.headers)
            elif variant == "stale":
                assert self.signature_max_age is not None
                stale_at = int(time.time()) - self.signature_max_age - 60
                bad = self.sign(ctx, delivery, timestamp=stale_at)
            else:
                assert self.signature_max_ahead is not None
                ahead_at = int(time.time()) + self.signature_max_ahead + 60
                bad = self.sign(ctx, delivery, timestamp=ahead_at)
            response = await ctx.post(bad)
            assert response.status_code == 401, (variant, response.status_code, response.text)
        assert await self.inbox_count(ctx) == 0, "a rejected delivery was stored"
        after = await self.checkout(ctx, checkout["id"])
        assert after["status"] == "OPEN" and after["subscription"] is None
        state = await self.state(ctx, customer)
        assert state["subscriptions"] == [] and state["payments"] == []
        self.assert_entitled(state, False)
        # The same deliveries, correctly signed, are accepted: only the signature was wrong.
        await ctx.post_all(deliveries)
        assert (await self.checkout(ctx, checkout["id"]))["status"] == "COMPLETED"

    async def test_redelivery_has_one_effect(self, conformance: ConformanceContext) -> None:
        ctx = conformance
        customer, checkout, deliveries = await self.completed(ctx)
        first = await self.state(ctx, customer)
        stored = await self.inbox_count(ctx)
        await ctx.post_all(deliveries)  # every delivery again: all 2xx
        await ctx.post_all(list(reversed(deliveries)))
        assert await self.state(ctx, customer) == first
        assert await self.checkout(ctx, checkout["id"]) == checkout
        assert await self.inbox_count(ctx) == stored
        assert len(first["subscriptions"]) == 1

    async def test_reversed_deliveries_end_in_the_same_state(
        self, conformance: ConformanceContext
    ) -> None:
        ctx = conformance
        in_order, checkout_a, _ = await self.completed(ctx)
        reversed_customer, checkout_b = await self.open_checkout(ctx)
        deliveries = list(await self.complete_checkout(ctx, checkout_b))
        await ctx.post_all(list(reversed(deliveries)))
        checkout_b = await self.checkout(ctx, checkout_b["id"])

        def shape(checkout: Mapping[str, Any], state: Mapping[str, Any]) -> Any:
            sub = checkout["subscription"] or {}
            return (
                checkout["status"],
                checkout["amountPaid"],
                sub.get("status"),
                sub.get("cancelAtPeriodEnd"),
                sub.get("currentPeriodEnd") is not None,
                len(state["subscriptions"]),
                [(p["status"], p["amount"]) for p in state["payments"]],
                state["entitlements"],
            )

        expected = shape(checkout_a, await self.state(ctx, in_order))
        assert shape(checkout_b, await self.state(ctx, reversed_customer)) == expected
        assert checkout_b["status"] == "COMPLETED"

    async def test_an_older_state_does_not_overwrite_a_newer_one(
        self, conformance: ConformanceContext
    ) -> None:
        ctx = conformance
        customer, checkout, _ = await self.completed(ctx)
        sub = checkout["subscription"]
        older = await self.cancel_at_provider(ctx, sub, at_period_end=True)
        if older is None:
            pytest.skip(f"{self.provider} has no provider-side cancel")
        newer = await self.cancel_at_provider(ctx, sub, at_period_end=False)
        assert newer is not None
        await ctx.post_all(list(newer))
        await ctx.post_all(list(older))  # late: the pending cancel is older than the end
        state = await self.state(ctx, customer)
        [only] = state["subscriptions"]
        assert only["id"] == sub["id"] and only["status"] == "CANCELED"
        self.assert_entitled(state, False)

    async def test_cancel_and_resume_reach_the_provider(
        self, conformance: ConformanceContext
    ) -> None:
        ctx = conformance
        caps = await self.capabilities(ctx)
        # A push-renewed subscription (no "recurring") is billing-gql's own to cancel.
        if not ({"cancel", "resume"} <= caps or "recurring" not in caps):
            pytest.skip(f"{self.provider} cannot cancel and resume")
        customer, checkout, _ = await self.completed(ctx)
        sub_id = checkout["subscription"]["id"]
        data = await ctx.api.admin(_CANCEL, {"id": sub_id, "end": True})
        canceled = data["cancelSubscription"]["subscription"]
        assert canceled["cancelAtPeriodEnd"] is True and canceled["status"] in _LIVE
        await ctx.post_all(list(await self.pending_deliveries(ctx)))
        state = await self.state(ctx, customer)
        assert state["subscriptions"][0]["cancelAtPeriodEnd"] is True
        self.assert_entitled(state, True)  # paid until the period ends

        data = await ctx.api.admin(_RESUME, {"id": sub_id})
        assert data["resumeSubscription"]["subscription"]["cancelAtPeriodEnd"] is False
        await ctx.post_all(list(await self.pending_deliveries(ctx)))
        state = await self.state(ctx, customer)
        assert state["subscriptions"][0]["cancelAtPeriodEnd"] is False

        data = await ctx.api.admin(_CANCEL, {"id": sub_id, "end": False})
        assert data["cancelSubscription"]["subscription"]["status"] == "CANCELED"
        await ctx.post_all(list(await self.pending_deliveries(ctx)))
        state = await self.state(ctx, customer)
        assert state["subscriptions"][0]["status"] == "CANCELED"
        self.assert_entitled(state, False)

    async def test_entitlements_end_with_the_subscription(
        self, conformance: ConformanceContext
    ) -> None:
        ctx = conformance
        customer, checkout, _ = await self.completed(ctx)
        self.assert_entitled(await self.state(ctx, customer), True)
        ended = await self.cancel_at_provider(ctx, checkout["subscription"], at_period_end=False)
        if ended is not None:
            await ctx.post_all(list(ended))
        elif "recurring" not in await self.capabilities(ctx):
            # Nothing to cancel at a push provider: billing-gql ends the subscription.
            sub_id = checkout["subscription"]["id"]
            await ctx.api.admin(_CANCEL, {"id": sub_id, "end": False})
        else:
            pytest.skip(f"{self.provider} has no provider-side cancel")
        state = await self.state(ctx, customer)
        assert state["subscriptions"][0]["status"] in ("CANCELED", "EXPIRED")
        self.assert_entitled(state, False)

    @pytest.mark.parametrize("variant", ["other_session", "underpaid", "other_currency"])
    async def test_a_forged_completion_does_not_complete_the_checkout(
        self, conformance: ConformanceContext, variant: str
    ) -> None:
        """A completion is bound to the provider session created for the checkout and must
        pay its amount in its currency: our checkout id in a payload proves nothing."""
        ctx = conformance
        customer, checkout = await self.open_checkout(ctx)
        deliveries = await self.forge_completion(ctx, checkout, variant)
        if deliveries is None:
            pytest.skip(f"{self.provider} cannot express a {variant} completion")
        for delivery in deliveries:
            response = await ctx.post(delivery)
            assert response.status_code < 300, (response.status_code, response.text)
        after = await self.checkout(ctx, checkout["id"])
        assert after["status"] == "OPEN", after
        assert after["subscription"] is None
        paid = parse_major(after["amountPaid"]["amount"], after["amountPaid"]["currency"])
        assert paid < parse_major(after["amount"]["amount"], after["amount"]["currency"])
        state = await self.state(ctx, customer)
        assert state["subscriptions"] == []
        self.assert_entitled(state, False)

    async def test_unused_event_types_are_acknowledged(
        self, conformance: ConformanceContext
    ) -> None:
        ctx = conformance
        customer, _, _ = await self.completed(ctx)
        before = await self.state(ctx, customer)
        delivery = await self.unrelated_delivery(ctx)
        if delivery is None:
            pytest.skip(f"{self.provider} gave no unrelated delivery")
        sql = "SELECT event_id, status FROM webhook_deliveries WHERE provider = $1"
        known = {r["event_id"] for r in await ctx.rows(sql, self.provider)}
        await ctx.post_all([delivery, delivery])
        assert await self.state(ctx, customer) == before
        stored = [r for r in await ctx.rows(sql, self.provider) if r["event_id"] not in known]
        # Stored once, and marked ignored: parse_webhook gave no events for it.
        assert [r["status"] for r in stored] == ["ignored"], stored

    @pytest.mark.parametrize("unavailable", [False, True], ids=["refused", "unavailable"])
    async def test_provider_errors_are_user_errors_with_nothing_half_written(
        self, conformance: ConformanceContext, unavailable: bool
    ) -> None:
        ctx = conformance
        plan = await self.make_plan(ctx, self.plan_spec())
        customer = await self.make_customer(ctx)
        if not self.fail_next_call(ctx, unavailable=unavailable):
            pytest.skip(f"{self.provider} makes no call at checkout")
        payload = await self.create_checkout(ctx, customer, plan)
        self.clear_failures(ctx)
        codes = [e["code"] for e in payload["userErrors"]]
        assert codes == ["PROVIDER_UNAVAILABLE" if unavailable else "PROVIDER_ERROR"], payload
        assert all(e["message"] for e in payload["userErrors"])
        rows = await ctx.rows("SELECT status FROM checkouts WHERE customer_id = $1::uuid", customer)
        assert [r["status"] for r in rows] == ["FAILED"], rows  # stored, then failed
        state = await self.state(ctx, customer)
        assert state["subscriptions"] == [] and state["payments"] == []
        self.assert_entitled(state, False)
        # Once the provider answers again, a new checkout goes through.
        retry = await self.create_checkout(ctx, customer, plan)
        assert retry["userErrors"] == [] and retry["checkout"]["status"] == "OPEN"

    async def test_operation_errors_leave_the_subscription_unchanged(
        self, conformance: ConformanceContext
    ) -> None:
        ctx = conformance
        if "cancel" not in await self.capabilities(ctx):
            pytest.skip(f"{self.provider} cancels nothing at the provider")
        customer, checkout, _ = await self.completed(ctx)
        before = await self.state(ctx, customer)
        if not self.fail_next_call(ctx, unavailable=False):
            pytest.skip(f"{self.provider} makes no call to cancel")
        result = await ctx.api.gql(
            _CANCEL, {"id": checkout["subscription"]["id"], "end": True}, admin=True
        )
        self.clear_failures(ctx)
        payload = result.data["cancelSubscription"]
        assert [e["code"] for e in payload["userErrors"]] == ["PROVIDER_ERROR"], payload
        assert await self.state(ctx, customer) == before

    async def test_a_refund_reaches_the_provider_once(
        self, conformance: ConformanceContext
    ) -> None:
        ctx = conformance
        customer, _, _ = await self.completed(ctx)
        data = await ctx.api.admin(_PAYMENT_IDS, {"c": customer})
        paid = next(p for p in data["payments"]["nodes"] if p["status"] == "succeeded")
        request = {"paymentId": paid["id"], "idempotencyKey": f"conf-{uuid.uuid4().hex}"}
        first = (await ctx.api.gql(_REFUND, {"i": request}, admin=True)).data["refundPayment"]
        if [e["field"] for e in first["userErrors"]] == [["input", "reference"]]:
            pytest.skip(f"{self.provider} cannot send money back (refunds are made outside)")
        assert first["userErrors"] == [], first
        refund = first["refund"]
        assert refund["status"] in ("succeeded", "pending") and refund["amount"] == paid["amount"]
        again = (await ctx.api.gql(_REFUND, {"i": request}, admin=True)).ok()["refundPayment"]
        assert again["userErrors"] == [] and again["refund"]["id"] == refund["id"]
        # The provider's own deliveries about the refund, twice: still one refund.
        deliveries = list(await self.pending_deliveries(ctx))
        await ctx.post_all(deliveries + deliveries)
        rows = await ctx.rows(
            "SELECT id, status FROM refunds WHERE payment_id = $1::uuid", paid["id"]
        )
        assert [str(r["id"]) for r in rows] == [refund["id"]], rows
        if refund["status"] == "succeeded":
            data = await ctx.api.admin(_PAYMENT_IDS, {"c": customer})
            [after] = [p for p in data["payments"]["nodes"] if p["id"] == paid["id"]]
            assert after["amountRefunded"] == paid["amount"] and after["status"] == "refunded"
