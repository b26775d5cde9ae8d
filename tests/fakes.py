"""Two small fake provider plugins for the engine's tests, built on the public plugin API only.

- ``fakepay``: a card provider with hosted checkouts that charges renewals itself (like Stripe
  or Polar). Its "API" is :class:`FakePayApi`, an in-memory server behind an httpx
  ``MockTransport``; its webhooks are JSON signed with HMAC-SHA256 in ``x-fake-signature``, and
  their ``data`` maps onto the normalized event fields.
- ``fakebank``: a bank-transfer provider (like SePay) that cannot charge renewals: checkouts
  carry transfer instructions and a payment reference; webhooks report transfers, authenticated
  by ``Authorization: Apikey <key>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from billing_gql import (
    BankTransferInstructions,
    BillingEvent,
    CheckoutRequest,
    CheckoutSession,
    EventKind,
    FeatureGrant,
    Money,
    PaymentInfo,
    PlanChangeRequest,
    PortalRequest,
    Provider,
    ProviderError,
    ProviderGrant,
    ProviderUnavailable,
    RefundInfo,
    StoredDelivery,
    SubscriptionRef,
    SubscriptionSnapshot,
    SubscriptionStatus,
    WebhookEnvelope,
    WebhookPayloadError,
    WebhookRequest,
    WebhookSignatureError,
    hookimpl,
)

PAY_SECRET = "whsec_fake_secret_value"
PAY_KEY = "sk_fake_key_value_123"
BANK_KEY = "bank_api_key_value"

FAKE_ENV = {
    "BILLING_GQL_FAKEPAY_API_KEY": PAY_KEY,
    "BILLING_GQL_FAKEPAY_WEBHOOK_SECRET": PAY_SECRET,
    "BILLING_GQL_FAKEBANK_API_KEY": BANK_KEY,
}


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class FakePayApi:
    """The fake provider's server state, shared by the test and the app."""

    checkouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    fail_with: int | None = None
    """Answer every request with this status (500: unavailable, 402: refused)."""
    fail_field: list[str] | None = None
    """The request field a refusal names (as a provider's validation error would)."""
    now: datetime = datetime(2027, 1, 31, 12, 30, tzinfo=UTC)
    """The provider's clock: the time of the state each operation answers with (its
    ``at``, as Stripe's and Polar's answers carry one); it moves on a second per answer."""

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def session_of(self, checkout_id: str) -> str:
        """The id of the session created for our checkout ``checkout_id``."""
        for session_id, body in self.checkouts.items():
            if body["metadata"].get("billing_gql_checkout_id") == checkout_id:
                return session_id
        raise KeyError(checkout_id)

    def paid(self, checkout_id: str, amount: int = 3000, currency: str = "USD") -> dict[str, Any]:
        """The session fields of a completion of our checkout ``checkout_id``: the session's
        id and what it charged."""
        return {
            "checkout_id": checkout_id,
            "provider_checkout_id": self.session_of(checkout_id),
            "amount_total": amount,
            "currency": currency,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        self.requests.append((request.method, request.url.path, body))
        if request.headers.get("authorization") != f"Bearer {PAY_KEY}":
            return httpx.Response(401, json={"error": "bad key"})
        if self.fail_with is not None:
            refusal: dict[str, Any] = {"error": "card_declined: no funds"}
            if self.fail_field is not None:
                refusal["field"] = self.fail_field
            return httpx.Response(self.fail_with, json=refusal)
        path = request.url.path
        if path == "/checkouts":
            cid = f"fcs_{len(self.checkouts) + 1}"
            self.checkouts[cid] = body
            return httpx.Response(
                200,
                json={
                    "id": cid,
                    "url": f"https://pay.fake/{cid}",
                    "customer": f"fcus_{body['customer_id'][:8]}",
                },
            )
        if path == "/portal":
            return httpx.Response(200, json={"url": f"https://pay.fake/portal/{body['customer']}"})
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "subscriptions":
            sub = self.subscriptions.get(parts[1])
            if sub is None:
                return httpx.Response(404, json={"error": "no such subscription"})
            action = parts[2]
            self.now += timedelta(seconds=1)
            if action == "cancel":
                if body["at_period_end"]:
                    sub["cancel_at_period_end"] = True
                else:
                    sub["status"] = "CANCELED"
                    sub["canceled_at"] = self.now.isoformat()
            elif action == "resume":
                sub["cancel_at_period_end"] = False
            elif action == "change":
                sub["plan_ref"] = body["plan_ref"]
            return httpx.Response(200, json={**sub, "at": self.now.isoformat()})
        return httpx.Response(404, json={"error": f"no route {path}"})


def snapshot_from(data: dict[str, Any]) -> SubscriptionSnapshot:
    return SubscriptionSnapshot(
        provider_subscription_id=data["id"],
        status=SubscriptionStatus(data["status"]),
        current_period_start=_dt(data.get("current_period_start")),
        current_period_end=_dt(data.get("current_period_end")),
        trial_end=_dt(data.get("trial_end")),
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
        canceled_at=_dt(data.get("canceled_at")),
        plan_ref=data.get("plan_ref"),
        quantity=data.get("quantity"),
        currency=data.get("currency"),
        provider_customer_id=data.get("customer"),
        checkout_id=data.get("checkout_id"),
        customer_id=data.get("customer_id"),
        external_customer_id=data.get("external_customer_id"),
        updated_at=_dt(data.get("at")),
    )


class FakePay(Provider):
    name = "fakepay"
    display_name = "Fake Pay"
    required_settings = ("API_KEY", "WEBHOOK_SECRET")
    secret_settings = ("API_KEY", "WEBHOOK_SECRET")
    currencies = ("USD", "JPY", "VND")
    needs_provider_ref = True
    charges_renewals = True
    refunds = True

    def _client(self) -> httpx.AsyncClient:
        return self.context.http.client(
            base_url="https://api.pay.fake",
            headers={"authorization": f"Bearer {self.settings['API_KEY']}"},
        )

    async def _call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._client() as client:
                response = await client.post(path, json=payload)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"fakepay unreachable: {exc}") from exc
        if response.status_code >= 500:
            raise ProviderUnavailable(f"fakepay answered {response.status_code}")
        if response.status_code >= 400:
            refusal = response.json()
            raise ProviderError(
                refusal.get("error", "refused"),
                status=response.status_code,
                field=refusal.get("field"),
            )
        result: dict[str, Any] = response.json()
        return result

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        body = await self._call(
            "/checkouts",
            {
                "price": request.plan.provider_ref,
                "quantity": request.quantity,
                "amount": request.amount.minor,
                "currency": request.amount.currency,
                "customer_id": request.customer.id,
                "metadata": dict(request.metadata),
                "idempotency_key": request.idempotency_key,
            },
        )
        return CheckoutSession(
            provider_checkout_id=body["id"], url=body["url"], provider_customer_id=body["customer"]
        )

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        given = request.headers.get("x-fake-signature", "")
        expected = hmac.new(
            self.settings["WEBHOOK_SECRET"].encode(), request.body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(given, expected):
            raise WebhookSignatureError("bad signature")
        try:
            body = json.loads(request.body)
            return WebhookEnvelope(
                event_id=body["id"],
                event_type=body["type"],
                occurred_at=_dt(body.get("occurred_at")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookPayloadError(str(exc)) from exc

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        body = delivery.json()
        kind, data = body["type"], body.get("data", {})
        if kind == "boom":
            raise RuntimeError(f"cannot parse with {self.settings['API_KEY']}")
        if kind == "ignored":
            return []
        occurred = _dt(body["occurred_at"])
        assert occurred is not None
        sub = data.get("subscription")
        pay = data.get("payment")
        refund = data.get("refund")
        grant = data.get("grant")
        return [
            BillingEvent(
                kind=EventKind(kind),
                occurred_at=occurred,
                checkout_id=data.get("checkout_id"),
                provider_checkout_id=data.get("provider_checkout_id"),
                customer_id=data.get("customer_id"),
                provider_customer_id=data.get("customer"),
                external_customer_id=data.get("external_customer_id"),
                subscription=snapshot_from(sub) if sub else None,
                amount=Money(data["amount_total"], data["currency"])
                if "amount_total" in data
                else None,
                payment=PaymentInfo(
                    provider_ref=pay["id"],
                    amount=Money(pay["amount"], pay["currency"]),
                    status=pay.get("status", "succeeded"),
                    provider_subscription_id=pay.get("subscription"),
                    checkout_id=pay.get("checkout_id"),
                    provider_customer_id=pay.get("customer"),
                )
                if pay
                else None,
                refund=RefundInfo(refund["payment"], Money(refund["amount"], refund["currency"]))
                if refund
                else None,
                grant=ProviderGrant(
                    grant_id=grant["id"],
                    benefit_id=grant["benefit"],
                    benefit_type="custom",
                    granted=grant["granted"],
                    provider_customer_id=grant.get("customer"),
                    customer_id=grant.get("customer_id"),
                    metadata=grant.get("metadata", {}),
                )
                if grant
                else None,
            )
        ]

    async def _snapshot(self, path: str, payload: dict[str, Any]) -> SubscriptionSnapshot:
        return snapshot_from(await self._call(path, payload))

    async def cancel_subscription(
        self, ref: SubscriptionRef, *, at_period_end: bool
    ) -> SubscriptionSnapshot | None:
        return await self._snapshot(
            f"/subscriptions/{ref.provider_subscription_id}/cancel",
            {"at_period_end": at_period_end},
        )

    async def resume_subscription(self, ref: SubscriptionRef) -> SubscriptionSnapshot | None:
        return await self._snapshot(f"/subscriptions/{ref.provider_subscription_id}/resume", {})

    async def change_subscription_plan(
        self, request: PlanChangeRequest
    ) -> SubscriptionSnapshot | None:
        return await self._snapshot(
            f"/subscriptions/{request.subscription.provider_subscription_id}/change",
            {"plan_ref": request.new_plan.provider_ref, "proration": str(request.proration)},
        )

    async def create_portal_session(self, request: PortalRequest) -> str:
        body = await self._call(
            "/portal",
            {"customer": request.customer.provider_customer_id, "return_url": request.return_url},
        )
        return str(body["url"])


class FakeBank(Provider):
    name = "fakebank"
    display_name = "Fake Bank"
    required_settings = ("API_KEY",)
    secret_settings = ("API_KEY",)
    currencies = ("VND",)
    needs_provider_ref = False
    charges_renewals = False
    hosted_checkout = False
    bank_transfer = True
    webhook_ack = {"success": True}
    references: list[str] = []
    """References to hand out first (tests force collisions with it)."""

    def payment_reference(self) -> str:
        if self.references:
            return self.references.pop(0)
        return "FB" + secrets.token_hex(4).upper()

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        assert request.payment_reference is not None
        qr = (
            f"https://qr.bank.fake/img?acc=0123&bank=FAKE&amount={request.amount.amount}"
            f"&des={request.payment_reference}"
        )
        return CheckoutSession(
            bank_transfer=BankTransferInstructions(
                bank_code="FAKE",
                account_number="0123",
                account_name="BILLING CO",
                reference=request.payment_reference,
                amount=request.amount,
                qr_code_url=qr,
            )
        )

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        if not hmac.compare_digest(
            request.headers.get("authorization", ""), f"Apikey {self.settings['API_KEY']}"
        ):
            raise WebhookSignatureError("bad api key")
        try:
            body = json.loads(request.body)
            return WebhookEnvelope(event_id=str(body["id"]), event_type="transfer")
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookPayloadError(str(exc)) from exc

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        body = delivery.json()
        at = _dt(body["at"])
        assert at is not None
        return [
            BillingEvent(
                kind=EventKind.PAYMENT_RECEIVED,
                occurred_at=at,
                payment=PaymentInfo(
                    provider_ref=f"txn-{body['id']}",
                    amount=Money(int(body["amount"]), "VND"),
                    reference=body.get("reference"),
                    received_at=at,
                    details={"memo": body.get("memo", "")},
                ),
            )
        ]


class FakePlugin:
    """Registers both fakes and maps ``fakepay`` grants with ``seats`` in metadata to 10 seats."""

    @hookimpl
    def register_providers(self) -> Sequence[type[Provider]]:
        return [FakePay, FakeBank]

    @hookimpl
    def map_provider_grant(
        self, provider: str, grant: ProviderGrant
    ) -> Sequence[FeatureGrant] | None:
        if grant.metadata.get("bundle") == "team":
            return [FeatureGrant("seats", True, Decimal(10)), FeatureGrant("sso")]
        return None


def sign(body: bytes) -> dict[str, str]:
    return {
        "x-fake-signature": hmac.new(PAY_SECRET.encode(), body, hashlib.sha256).hexdigest(),
        "content-type": "application/json",
    }


def pay_event(
    kind: str, occurred_at: str, event_id: str | None = None, **data: Any
) -> tuple[bytes, dict[str, str]]:
    """A signed fakepay delivery."""
    body = json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:12]}",
            "type": kind,
            "occurred_at": occurred_at,
            "data": data,
        }
    ).encode()
    return body, sign(body)


def bank_transfer(
    txn_id: int, amount: int, reference: str | None, at: str, memo: str = ""
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"id": txn_id, "amount": amount, "reference": reference, "at": at, "memo": memo}
    ).encode()
    return body, {"authorization": f"Apikey {BANK_KEY}", "content-type": "application/json"}


class EchoProvider(Provider):
    """The plugin host's minimal provider: HMAC-SHA256 of the body with SECRET in ``x-signature``."""

    name = "echo"
    display_name = "Echo"
    required_settings = ("SECRET",)
    optional_settings = {"REGION": "eu"}
    currencies = ("USD",)
    webhook_ack = {"success": True}

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        return CheckoutSession(url=f"https://echo.test/{request.checkout_id}")

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        expected = hmac.new(self.settings["SECRET"].encode(), request.body, hashlib.sha256)
        given = request.headers.get("x-signature", "")
        if not hmac.compare_digest(expected.hexdigest(), given):
            raise WebhookSignatureError("bad signature")
        try:
            payload = json.loads(request.body)
            return WebhookEnvelope(event_id=str(payload["id"]), event_type=payload.get("type"))
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookPayloadError(str(exc)) from exc

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        return []
