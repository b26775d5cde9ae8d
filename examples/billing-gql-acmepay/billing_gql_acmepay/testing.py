"""A fake AcmePay for tests: its JSON API served as an httpx transport, with state.

It behaves like AcmePay where the plugin can tell the difference (the package README describes
the real API):

- checks ``Authorization: Bearer <key>``, requires an ``Idempotency-Key`` on every POST and
  replays it (same key and body → the first answer; same key, other body → 409
  ``idempotency_conflict``), validates parameters (400 ``unknown_parameter``,
  ``parameter_invalid``, ``resource_missing`` …);
- keeps prices, customers, checkouts, subscriptions and payments; copies a checkout's
  ``metadata`` onto the subscription and payments it creates;
- acts as the buyer and as AcmePay: :meth:`FakeAcmePay.pay` pays a checkout,
  :meth:`~FakeAcmePay.renew`, :meth:`~FakeAcmePay.fail_renewal`, :meth:`~FakeAcmePay.cancel`,
  :meth:`~FakeAcmePay.refund`, :meth:`~FakeAcmePay.expire` change state as AcmePay would, each
  queuing the events AcmePay sends; :meth:`~FakeAcmePay.drain` signs them as deliveries;
- can be told to fail: :meth:`~FakeAcmePay.fail_next` (429 with ``Retry-After``, or a 5xx),
  :meth:`~FakeAcmePay.error_next` (any error object).

Its clock is the wall clock, made strictly increasing (each event a microsecond after the one
before), so the order of events is the order of their ``created_at``.

Use::

    fake = FakeAcmePay()
    price = fake.create_price("29.00", "USD", interval="month")
    async with make_api(plugins=[plugin], env=fake.env(), transports={"acmepay": fake.transport()}):
        ...                                   # createCheckout with the plan's ref = price
        fake.pay(fake.checkout_for(our_checkout_id)["id"])
        for delivery in fake.drain():
            await api.post_webhook("acmepay", delivery.body, delivery.headers)

The signature is computed here independently of the plugin's verifier, from the documented
scheme, so a test catches the two drifting apart.
"""

from __future__ import annotations

import copy
import email.utils
import hashlib
import hmac
import json
import secrets
import string
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from billing_gql import format_minor, parse_major

__all__ = ["AcmeDelivery", "AcmePayApiError", "FakeAcmePay", "RecordedRequest", "iso"]

_ALPHABET = string.ascii_letters + string.digits
_MIN_EXPIRY = timedelta(minutes=5)
_MAX_EXPIRY = timedelta(days=7)
_DEFAULT_EXPIRY = timedelta(hours=24)
_CHECKOUT_PARAMS = frozenset(
    {
        "price",
        "quantity",
        "customer",
        "customer_email",
        "customer_reference",
        "trial_days",
        "success_url",
        "cancel_url",
        "expires_at",
        "metadata",
    }
)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{''.join(secrets.choice(_ALPHABET) for _ in range(20))}"


def iso(moment: datetime | None) -> str | None:
    """AcmePay's time format: ISO 8601 in UTC with microseconds and ``Z``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _add_interval(start: datetime, interval: str, count: int) -> datetime:
    """``start`` moved by ``count`` intervals (months keep the day, clamped at month end)."""
    if interval == "day":
        return start + timedelta(days=count)
    if interval == "week":
        return start + timedelta(weeks=count)
    months = count * (12 if interval == "year" else 1)
    year, month0 = divmod(start.month - 1 + months, 12)
    day = start.day
    while True:
        try:
            return start.replace(year=start.year + year, month=month0 + 1, day=day)
        except ValueError:
            day -= 1


@dataclass(frozen=True)
class AcmeDelivery:
    """One webhook delivery as AcmePay sends it: the raw body, its headers, the event."""

    body: bytes
    headers: dict[str, str]
    event: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.event["id"])

    @property
    def type(self) -> str:
        return str(self.event["type"])


@dataclass(frozen=True)
class RecordedRequest:
    """A request the fake received (after authentication)."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]


class AcmePayApiError(Exception):
    """An error answer of the fake API."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> httpx.Response:
        return httpx.Response(
            self.status,
            json={"error": {"code": self.code, "message": self.message}},
            headers=self.headers,
        )


@dataclass
class _Fault:
    status: int
    code: str
    message: str
    retry_after: float | None = None


def _invalid(param: str, message: str) -> AcmePayApiError:
    return AcmePayApiError(400, "parameter_invalid", f"{param}: {message}")


def _missing(kind: str, ident: object) -> AcmePayApiError:
    return AcmePayApiError(404, "resource_missing", f"No such {kind}: {ident!r}")


@dataclass
class FakeAcmePay:
    """In-memory AcmePay. Every state change queues the events AcmePay would send."""

    api_base: str = "https://api.acmepay.test"
    checkout_base: str = "https://pay.acmepay.test"
    api_key: str = field(default_factory=lambda: "ak_test_" + secrets.token_hex(12))
    webhook_secret: str = field(default_factory=lambda: "whsec_" + secrets.token_hex(16))
    prices: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    checkouts: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    """Every authenticated request, in order."""
    events: list[dict[str, Any]] = field(default_factory=list, init=False)
    """Every event AcmePay emitted, in order (drained or not)."""
    _queue: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _faults: deque[_Fault] = field(default_factory=deque, init=False, repr=False)
    _idempotency: dict[str, tuple[str, int, Any]] = field(
        default_factory=dict, init=False, repr=False
    )
    _last: datetime = field(
        default_factory=lambda: datetime(2000, 1, 1, tzinfo=UTC), init=False, repr=False
    )

    # -- wiring ----------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """The fake API as an httpx transport (give it to ``make_api(transports=…)``)."""
        return httpx.MockTransport(self.handle)

    def env(self, api_base: str | None = None) -> dict[str, str]:
        """The ``BILLING_GQL_ACMEPAY_*`` settings pointing at this fake."""
        return {
            "BILLING_GQL_ACMEPAY_API_KEY": self.api_key,
            "BILLING_GQL_ACMEPAY_WEBHOOK_SECRET": self.webhook_secret,
            "BILLING_GQL_ACMEPAY_API_BASE": api_base or self.api_base,
        }

    def tick(self) -> datetime:
        """AcmePay's now: the wall clock, at least a microsecond after the previous tick."""
        moment = max(datetime.now(UTC), self._last + timedelta(microseconds=1))
        self._last = moment
        return moment

    # -- the dashboard ---------------------------------------------------------------------

    def create_price(
        self, amount: str, currency: str, *, interval: str | None = "month", interval_count: int = 1
    ) -> str:
        """A price (``interval=None``: one-time); returns its id, a plan's provider ref."""
        parse_major(amount, currency)  # refuse what AcmePay would refuse
        if interval not in (None, "day", "week", "month", "year"):
            raise ValueError(f"unknown interval {interval!r}")
        price_id = _new_id("price")
        self.prices[price_id] = {
            "id": price_id,
            "object": "price",
            "amount": amount,
            "currency": currency.upper(),
            "interval": interval,
            "interval_count": interval_count,
        }
        return price_id

    def create_customer(self, *, email: str | None = None, reference: str | None = None) -> str:
        """A customer (queues ``customer.created``, an event billing-gql does not use)."""
        customer_id = _new_id("cus")
        self.customers[customer_id] = {
            "id": customer_id,
            "object": "customer",
            "email": email,
            "reference": reference,
            "created_at": iso(self.tick()),
        }
        self._emit("customer.created", self.customers[customer_id])
        return customer_id

    def update_customer(self, customer_id: str, *, email: str | None) -> None:
        """Change a customer's email (queues ``customer.updated``)."""
        self.customers[customer_id]["email"] = email
        self._emit("customer.updated", self.customers[customer_id])

    # -- faults ----------------------------------------------------------------------------

    def fail_next(
        self, count: int = 1, *, status: int = 503, retry_after: float | None = None
    ) -> None:
        """The next ``count`` requests answer ``status`` (429: with ``Retry-After``)."""
        code = "rate_limited" if status == 429 else "server_error"
        for _ in range(count):
            self._faults.append(_Fault(status, code, f"AcmePay answered {status}", retry_after))

    def error_next(self, status: int = 400, *, code: str, message: str) -> None:
        """The next request answers ``status`` with this error object."""
        self._faults.append(_Fault(status, code, message))

    def clear_faults(self) -> None:
        """Forget faults not consumed yet."""
        self._faults.clear()

    # -- HTTP ------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one API request."""
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return AcmePayApiError(401, "unauthorized", "Invalid API key provided").response()
        body: Any = None
        if request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                return AcmePayApiError(400, "invalid_json", "The body is not JSON").response()
        path = request.url.path
        self.requests.append(RecordedRequest(request.method, path, body, dict(request.headers)))
        if self._faults:
            fault = self._faults.popleft()
            headers = {"retry-after": str(fault.retry_after)} if fault.retry_after else {}
            return AcmePayApiError(fault.status, fault.code, fault.message, headers).response()
        key = request.headers.get("idempotency-key")
        fingerprint = f"{request.method} {path} {json.dumps(body, sort_keys=True)}"
        if request.method == "POST":
            if not key:
                return AcmePayApiError(
                    400, "idempotency_key_required", "POST requests need an Idempotency-Key"
                ).response()
            if key in self._idempotency:
                seen, status, payload = self._idempotency[key]
                if seen != fingerprint:
                    return AcmePayApiError(
                        409,
                        "idempotency_conflict",
                        "This Idempotency-Key was used with other parameters",
                    ).response()
                return self._json(status, copy.deepcopy(payload), replayed=True)
        try:
            status, payload = 200, self._route(request.method, path, body)
        except AcmePayApiError as exc:
            status, payload = exc.status, {"error": {"code": exc.code, "message": exc.message}}
        if request.method == "POST" and key and status < 500:
            self._idempotency[key] = (fingerprint, status, copy.deepcopy(payload))
        return self._json(status, payload)

    def _json(self, status: int, payload: Any, *, replayed: bool = False) -> httpx.Response:
        headers = {"date": email.utils.format_datetime(self.tick(), usegmt=True)}
        if replayed:
            headers["idempotent-replayed"] = "true"
        return httpx.Response(status, json=payload, headers=headers)

    def _route(self, method: str, path: str, body: Any) -> dict[str, Any]:
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v1"]:
            raise AcmePayApiError(404, "not_found", f"Unrecognized request URL ({method} {path})")
        rest = parts[1:]
        if method == "POST" and rest == ["checkouts"]:
            return self._create_checkout(self._params(body))
        if method == "GET" and len(rest) == 2 and rest[0] == "checkouts":
            return copy.deepcopy(self._get(self.checkouts, "checkout", rest[1]))
        if method == "GET" and len(rest) == 2 and rest[0] == "subscriptions":
            return copy.deepcopy(self._get(self.subscriptions, "subscription", rest[1]))
        if method == "POST" and len(rest) == 3 and rest[0] == "subscriptions":
            params = self._params(body)
            if rest[2] == "cancel":
                self._only(params, {"at_period_end"})
                at_end = params.get("at_period_end")
                if not isinstance(at_end, bool):
                    raise _invalid("at_period_end", "must be true or false")
                self._cancel(rest[1], at_period_end=at_end)
                return copy.deepcopy(self.subscriptions[rest[1]])
            if rest[2] == "resume":
                self._only(params, set())
                self._resume(rest[1])
                return copy.deepcopy(self.subscriptions[rest[1]])
        raise AcmePayApiError(404, "not_found", f"Unrecognized request URL ({method} {path})")

    @staticmethod
    def _params(body: Any) -> dict[str, Any]:
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise AcmePayApiError(400, "invalid_json", "The body must be a JSON object")
        return body

    @staticmethod
    def _only(params: Mapping[str, Any], allowed: Iterable[str]) -> None:
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise AcmePayApiError(400, "unknown_parameter", f"Unknown parameter: {unknown[0]}")

    @staticmethod
    def _get(store: Mapping[str, dict[str, Any]], kind: str, ident: str) -> dict[str, Any]:
        found = store.get(ident)
        if found is None:
            raise _missing(kind, ident)
        return found

    # -- checkouts -------------------------------------------------------------------------

    def _create_checkout(self, params: dict[str, Any]) -> dict[str, Any]:
        self._only(params, _CHECKOUT_PARAMS)
        price_id = params.get("price")
        if not isinstance(price_id, str):
            raise _invalid("price", "is required")
        price = self.prices.get(price_id)
        if price is None:
            raise AcmePayApiError(400, "resource_missing", f"No such price: {price_id!r}")
        quantity = params.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 999:
            raise _invalid("quantity", "must be an integer from 1 to 999")
        customer = params.get("customer")
        if customer is not None and customer not in self.customers:
            raise AcmePayApiError(400, "resource_missing", f"No such customer: {customer!r}")
        for name in ("customer_email", "customer_reference", "success_url", "cancel_url"):
            if params.get(name) is not None and not isinstance(params[name], str):
                raise _invalid(name, "must be a string")
        for name in ("success_url", "cancel_url"):
            if params.get(name) and not params[name].startswith(("https://", "http://")):
                raise _invalid(name, "must be an http(s) URL")
        trial_days = params.get("trial_days", 0)
        if isinstance(trial_days, bool) or not isinstance(trial_days, int) or trial_days < 0:
            raise _invalid("trial_days", "must be a non-negative integer")
        if trial_days and price["interval"] is None:
            raise _invalid("trial_days", "needs a recurring price")
        now = self.tick()
        expires_at = now + _DEFAULT_EXPIRY
        if params.get("expires_at") is not None:
            try:
                expires_at = datetime.fromisoformat(str(params["expires_at"]))
            except ValueError:
                raise _invalid("expires_at", "must be an ISO 8601 time") from None
            if expires_at.tzinfo is None or not (
                now + _MIN_EXPIRY <= expires_at <= now + _MAX_EXPIRY
            ):
                raise _invalid("expires_at", "must be 5 minutes to 7 days ahead, with an offset")
        meta = params.get("metadata", {})
        if not isinstance(meta, dict) or len(meta) > 20:
            raise _invalid("metadata", "must be an object of at most 20 keys")
        for key, value in meta.items():
            if not isinstance(value, str) or len(key) > 40 or len(value) > 500:
                raise _invalid(f"metadata[{key}]", "must be a string of at most 500 characters")
        amount = parse_major(price["amount"], price["currency"]) * quantity
        checkout_id = _new_id("chk")
        self.checkouts[checkout_id] = {
            "id": checkout_id,
            "object": "checkout",
            "status": "open",
            "url": f"{self.checkout_base}/c/{checkout_id}",
            "price": price_id,
            "quantity": quantity,
            "amount": format_minor(amount, price["currency"]),
            "currency": price["currency"],
            "customer": customer,
            "customer_email": params.get("customer_email"),
            "customer_reference": params.get("customer_reference"),
            "trial_days": trial_days,
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
            "subscription": None,
            "payment": None,
            "metadata": dict(meta),
            "expires_at": iso(expires_at),
            "created_at": iso(now),
        }
        return copy.deepcopy(self.checkouts[checkout_id])

    def checkout_for(self, checkout_id: str) -> dict[str, Any]:
        """The AcmePay checkout made for billing-gql's checkout ``checkout_id``."""
        for checkout in self.checkouts.values():
            if checkout["metadata"].get("billing_gql_checkout_id") == checkout_id:
                return checkout
        raise KeyError(f"no AcmePay checkout for {checkout_id}")

    def pay(self, checkout_id: str) -> list[dict[str, Any]]:
        """The buyer pays the AcmePay checkout ``checkout_id`` (or starts its trial).

        Queues, in AcmePay's order: ``customer.created`` (a new customer), then for a
        recurring price ``subscription.created``, ``payment.succeeded`` (none during a trial),
        and ``checkout.paid`` with the subscription and payment expanded.
        """
        checkout = self._get(self.checkouts, "checkout", checkout_id)
        if checkout["status"] != "open":
            raise ValueError(f"checkout {checkout_id} is {checkout['status']}")
        start = len(self._queue)
        if checkout["customer"] is None:
            checkout["customer"] = self.create_customer(
                email=checkout["customer_email"], reference=checkout["customer_reference"]
            )
        price = self.prices[checkout["price"]]
        now = self.tick()
        subscription = None
        if price["interval"] is not None:
            subscription = self._new_subscription(checkout, price, now)
            self._emit("subscription.created", subscription)
        payment = None
        if subscription is None or subscription["status"] == "active":
            payment = self._new_payment(
                amount=checkout["amount"],
                currency=checkout["currency"],
                customer=checkout["customer"],
                metadata=checkout["metadata"],
                reason="checkout",
                checkout=checkout_id,
                subscription=subscription["id"] if subscription else None,
            )
            self._emit("payment.succeeded", payment)
        checkout["status"] = "paid"
        checkout["subscription"] = subscription["id"] if subscription else None
        checkout["payment"] = payment["id"] if payment else None
        paid = copy.deepcopy(checkout)
        paid["subscription"] = copy.deepcopy(subscription)
        paid["payment"] = copy.deepcopy(payment)
        self._emit("checkout.paid", paid)
        return list(self._queue[start:])

    def expire(self, checkout_id: str) -> list[dict[str, Any]]:
        """An open checkout reaches its expiry (queues ``checkout.expired``)."""
        checkout = self._get(self.checkouts, "checkout", checkout_id)
        if checkout["status"] != "open":
            raise ValueError(f"checkout {checkout_id} is {checkout['status']}")
        checkout["status"] = "expired"
        return [self._emit("checkout.expired", checkout)]

    # -- subscriptions ---------------------------------------------------------------------

    def _new_subscription(
        self, checkout: Mapping[str, Any], price: Mapping[str, Any], now: datetime
    ) -> dict[str, Any]:
        trial_days = int(checkout["trial_days"])
        if trial_days:
            status, end = "trialing", now + timedelta(days=trial_days)
        else:
            status, end = "active", _add_interval(now, price["interval"], price["interval_count"])
        sub_id = _new_id("sub")
        self.subscriptions[sub_id] = {
            "id": sub_id,
            "object": "subscription",
            "status": status,
            "customer": checkout["customer"],
            "price": price["id"],
            "quantity": checkout["quantity"],
            "currency": price["currency"],
            "current_period_start": iso(now),
            "current_period_end": iso(end),
            "trial_end": iso(end) if trial_days else None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "ended_at": None,
            "metadata": dict(checkout["metadata"]),
            "created_at": iso(now),
            "updated_at": iso(now),
        }
        return self.subscriptions[sub_id]

    def _live(self, sub_id: str) -> dict[str, Any]:
        sub = self._get(self.subscriptions, "subscription", sub_id)
        if sub["status"] == "canceled":
            raise AcmePayApiError(
                400, "subscription_canceled", f"Subscription {sub_id} is canceled"
            )
        return sub

    def _cancel(self, sub_id: str, *, at_period_end: bool) -> dict[str, Any]:
        sub = self._live(sub_id)
        now = self.tick()
        if at_period_end:
            sub["cancel_at_period_end"] = True
            sub["updated_at"] = iso(now)
            return self._emit("subscription.updated", sub)
        sub.update(
            status="canceled",
            cancel_at_period_end=False,
            canceled_at=iso(now),
            ended_at=iso(now),
            updated_at=iso(now),
        )
        return self._emit("subscription.canceled", sub)

    def _resume(self, sub_id: str) -> dict[str, Any] | None:
        sub = self._live(sub_id)
        if not sub["cancel_at_period_end"]:
            return None  # nothing scheduled: AcmePay answers the subscription unchanged
        sub["cancel_at_period_end"] = False
        sub["updated_at"] = iso(self.tick())
        return self._emit("subscription.updated", sub)

    def cancel(self, sub_id: str, *, at_period_end: bool = False) -> list[dict[str, Any]]:
        """Cancel from AcmePay's dashboard: now (``subscription.canceled``) or at the period
        end (``subscription.updated`` with ``cancel_at_period_end``)."""
        return [self._cancel(sub_id, at_period_end=at_period_end)]

    def renew(self, sub_id: str) -> list[dict[str, Any]]:
        """The period (or trial) ends: AcmePay charges the next period, or ends a subscription
        set to cancel at the period end."""
        sub = self._live(sub_id)
        now = self.tick()
        end = datetime.fromisoformat(sub["current_period_end"])
        if sub["cancel_at_period_end"]:
            sub.update(
                status="canceled",
                cancel_at_period_end=False,
                ended_at=iso(end),
                updated_at=iso(now),
            )
            return [self._emit("subscription.canceled", sub)]
        price = self.prices[sub["price"]]
        amount = parse_major(price["amount"], price["currency"]) * int(sub["quantity"])
        payment = self._new_payment(
            amount=format_minor(amount, price["currency"]),
            currency=price["currency"],
            customer=sub["customer"],
            metadata=sub["metadata"],
            reason="renewal",
            checkout=None,
            subscription=sub_id,
        )
        new_end = _add_interval(end, price["interval"], price["interval_count"])
        sub.update(
            status="active",
            current_period_start=iso(end),
            current_period_end=iso(new_end),
            updated_at=iso(now),
        )
        return [self._emit("payment.succeeded", payment), self._emit("subscription.updated", sub)]

    def fail_renewal(self, sub_id: str) -> list[dict[str, Any]]:
        """The renewal charge is declined: a failed payment, the subscription ``past_due``."""
        sub = self._live(sub_id)
        price = self.prices[sub["price"]]
        amount = parse_major(price["amount"], price["currency"]) * int(sub["quantity"])
        payment = self._new_payment(
            amount=format_minor(amount, price["currency"]),
            currency=price["currency"],
            customer=sub["customer"],
            metadata=sub["metadata"],
            reason="renewal",
            checkout=None,
            subscription=sub_id,
            status="failed",
        )
        sub.update(status="past_due", updated_at=iso(self.tick()))
        return [self._emit("payment.failed", payment), self._emit("subscription.updated", sub)]

    # -- payments --------------------------------------------------------------------------

    def _new_payment(
        self,
        *,
        amount: str,
        currency: str,
        customer: str | None,
        metadata: Mapping[str, str],
        reason: str,
        checkout: str | None,
        subscription: str | None,
        status: str = "succeeded",
    ) -> dict[str, Any]:
        payment_id = _new_id("pay")
        self.payments[payment_id] = {
            "id": payment_id,
            "object": "payment",
            "status": status,
            "amount": amount,
            "amount_refunded": format_minor(0, currency),
            "currency": currency,
            "customer": customer,
            "checkout": checkout,
            "subscription": subscription,
            "reason": reason,
            "metadata": dict(metadata),
            "created_at": iso(self.tick()),
        }
        return self.payments[payment_id]

    def refund(self, payment_id: str, amount: str | None = None) -> list[dict[str, Any]]:
        """Refund ``amount`` (major units; default: what is left) of a payment."""
        payment = self._get(self.payments, "payment", payment_id)
        currency = payment["currency"]
        total = parse_major(payment["amount"], currency)
        done = parse_major(payment["amount_refunded"], currency)
        more = total - done if amount is None else parse_major(amount, currency)
        if more <= 0 or done + more > total:
            raise ValueError(f"cannot refund {more} of payment {payment_id}")
        payment["amount_refunded"] = format_minor(done + more, currency)
        return [self._emit("payment.refunded", payment)]

    # -- events and deliveries -------------------------------------------------------------

    def _emit(self, event_type: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        event = {
            "id": _new_id("evt"),
            "object": "event",
            "type": event_type,
            "created_at": iso(self.tick()),
            "data": copy.deepcopy(dict(obj)),
        }
        self._queue.append(event)
        self.events.append(event)
        return event

    def sign(
        self, body: bytes, *, timestamp: int | None = None, secret: str | None = None
    ) -> dict[str, str]:
        """The ``AcmePay-Timestamp`` and ``AcmePay-Signature`` headers for ``body``."""
        stamp = int(time.time()) if timestamp is None else timestamp
        key = (secret or self.webhook_secret).encode()
        digest = hmac.new(key, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        return {"acmepay-timestamp": str(stamp), "acmepay-signature": f"v1={digest}"}

    def delivery(
        self, event: Mapping[str, Any], *, timestamp: int | None = None, secret: str | None = None
    ) -> AcmeDelivery:
        """``event`` as AcmePay delivers it (a retry of one event keeps its id, re-signed)."""
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "AcmePay-Webhooks/1.0",
            **self.sign(body, timestamp=timestamp, secret=secret),
        }
        return AcmeDelivery(body, headers, copy.deepcopy(dict(event)))

    def drain(self, types: Sequence[str] | None = None) -> list[AcmeDelivery]:
        """The queued events (optionally only these types) as signed deliveries, in order;
        the queue is emptied."""
        queued, self._queue = self._queue, []
        return [self.delivery(e) for e in queued if types is None or e["type"] in types]
