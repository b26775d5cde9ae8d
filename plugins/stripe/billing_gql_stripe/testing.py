"""A fake Stripe for tests and benchmarks: an in-memory v1 API served as an httpx transport.

It behaves like Stripe where the plugin can tell the difference:

- reads form bodies in bracket notation (:func:`decode`: what the ``stripe`` SDK sent),
  checks the ``Authorization: Bearer`` key, validates required and unknown parameters
  (400 ``invalid_request_error`` with ``param``);
- keeps state: prices, customers, checkout sessions, subscriptions with items, invoices,
  payment intents, charges, portal sessions, meter events (deduplicated by ``identifier``);
- replays idempotent POSTs (same key and parameters → the same answer; same key with other
  parameters → Stripe's ``idempotency_error``);
- can be told to answer 429 with ``Retry-After``, a 5xx, or any error object for the next
  calls (:meth:`FakeStripe.fail_next`, :meth:`FakeStripe.error_next`);
- returns objects in the shapes of Stripe's published fixtures (``fixtures3.json``, the
  samples stripe-mock serves), with the fields that matter filled in;
- acts as the buyer and as Stripe (:meth:`FakeStripe.complete_checkout`,
  :meth:`FakeStripe.renew`, :meth:`FakeStripe.refund` …), queuing the events Stripe would
  send as full ``event`` envelopes; :meth:`FakeStripe.drain` signs them the way Stripe does.

Use::

    fake = FakeStripe()
    price = fake.create_price(unit_amount=2900, currency="usd", interval="month")
    async with make_api(plugins=[plugin], env=fake.env(), transports={"stripe": fake.transport()}):
        ...
        fake.complete_checkout(fake.session_for(checkout_id)["id"])
        for delivery in fake.drain():
            await api.post_webhook("stripe", delivery.body, delivery.headers)
"""

from __future__ import annotations

import copy
import email.utils
import hashlib
import hmac
import json
import re
import secrets
import string
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

import httpx

from billing_gql_stripe.api import STRIPE_VERSION

__all__ = [
    "FakeStripe",
    "RecordedRequest",
    "StripeDelivery",
    "decode",
    "load_fixture",
]

_ALPHABET = string.ascii_letters + string.digits
_FIXTURES: dict[str, Any] | None = None


_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def decode(body: str | bytes) -> dict[str, Any]:
    """A form body (or query string) back into nested dicts and lists.

    A dict whose keys are all ``0..n-1`` becomes a list; ``key[]`` appends. A malformed key
    raises ``ValueError``.
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True, strict_parsing=False):
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"malformed parameter name {key!r}")
        parts = [match.group(1), *_PART.findall(match.group(2))]
        node: dict[str, Any] = root
        for index, raw_part in enumerate(parts):
            last = index == len(parts) - 1
            part = raw_part or str(sum(1 for k in node if k.isdigit()))  # key[] appends
            if last:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ValueError(f"parameter {key!r} conflicts with a scalar")
                node = child
    return {k: _listify(v) for k, v in root.items()}


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    keys = list(converted)
    if keys and all(k.isdigit() for k in keys) and sorted(map(int, keys)) == list(range(len(keys))):
        return [converted[str(i)] for i in range(len(keys))]
    return converted


def load_fixture(resource: str) -> dict[str, Any]:
    """A deep copy of Stripe's sample object for ``resource`` (``"subscription"`` …)."""
    global _FIXTURES  # noqa: PLW0603 - loaded once per process
    if _FIXTURES is None:
        text = resources.files("billing_gql_stripe").joinpath("fixtures3.json").read_text("utf-8")
        _FIXTURES = json.loads(text)["resources"]
    return copy.deepcopy(_FIXTURES[resource])


def _new_id(prefix: str) -> str:
    return f"{prefix}_{''.join(secrets.choice(_ALPHABET) for _ in range(24))}"


def _add_interval(start: int, interval: str, count: int) -> int:
    """``start`` moved by ``count`` intervals (months keep the day, clamped at month end)."""
    if interval == "day":
        return start + 86400 * count
    if interval == "week":
        return start + 7 * 86400 * count
    moment = datetime.fromtimestamp(start, UTC)
    months = count * (12 if interval == "year" else 1)
    year, month0 = divmod(moment.month - 1 + months, 12)
    year += moment.year
    day = moment.day
    while True:
        try:
            moved = moment.replace(year=year, month=month0 + 1, day=day)
            break
        except ValueError:
            day -= 1
    return int(moved.timestamp())


@dataclass(frozen=True)
class StripeDelivery:
    """One webhook delivery as Stripe sends it: the raw body and its headers."""

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
    params: dict[str, Any]
    headers: dict[str, str]
    body: bytes


class StripeApiError(Exception):
    """An error answer from the fake: ``{"error": {...}}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        validation: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        error: dict[str, str] = {"type": type, "message": message}
        if code is not None:
            error["code"] = code
        if param is not None:
            error["param"] = param
        self.body: dict[str, Any] = {"error": error}
        # Stripe saves no idempotent result when the parameters failed validation.
        self.validation = validation


@dataclass
class _Fault:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _metered(price: Mapping[str, Any]) -> bool:
    recurring = price.get("recurring")
    return isinstance(recurring, Mapping) and recurring.get("usage_type") == "metered"


def _missing(param: str) -> StripeApiError:
    return StripeApiError(400, f"Missing required param: {param}.", param=param)


def _no_such(kind: str, ident: str, param: str = "id") -> StripeApiError:
    return StripeApiError(
        404 if param == "id" else 400,
        f"No such {kind}: '{ident}'",
        code="resource_missing",
        param=param,
        validation=False,
    )


def _unknown_params(params: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed_set = set(allowed) | {"expand"}
    for key in params:
        if key not in allowed_set:
            raise StripeApiError(400, f"Received unknown parameter: {key}", param=key)


def _int(
    params: Mapping[str, Any], key: str, *, minimum: int | None = None, prefix: str = ""
) -> int | None:
    """An integer parameter; errors name it as ``prefix[key]`` (the path Stripe reports)."""
    raw = params.get(key)
    if raw is None or raw == "":
        return None
    param = f"{prefix}[{key}]" if prefix else key
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise StripeApiError(400, f"Invalid integer: {raw}", param=param) from None
    if minimum is not None and value < minimum:
        raise StripeApiError(
            400, f"This value must be greater than or equal to {minimum}.", param=param
        )
    return value


def _bool(params: Mapping[str, Any], key: str) -> bool | None:
    raw = params.get(key)
    if raw is None:
        return None
    if raw in ("true", "false"):
        return bool(raw == "true")
    raise StripeApiError(400, f"Invalid boolean: {raw}", param=key)


def _metadata(raw: object, param: str) -> dict[str, str]:
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict):
        raise StripeApiError(400, "Invalid object", param=param)
    if len(raw) > 50:
        raise StripeApiError(400, "You can only set up to 50 metadata keys.", param=param)
    for key, value in raw.items():
        if len(key) > 40:
            raise StripeApiError(400, "Metadata keys can be at most 40 characters.", param=param)
        if not isinstance(value, str) or len(value) > 500:
            raise StripeApiError(
                400, "Metadata values can be at most 500 characters.", param=f"{param}[{key}]"
            )
    return dict(raw)


class FakeStripe:
    """An in-memory Stripe. Hand :meth:`transport` to the code under test."""

    def __init__(
        self,
        *,
        api_key: str = "sk_test_fake51Hx2gKq9c7aZ0",
        webhook_secret: str = "whsec_fakeSecretForTests0123456789",  # noqa: S107 - a fake
        clock: Callable[[], float] = time.time,
        distinct_times: bool = True,
    ) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self._wall = clock
        self.distinct_times = distinct_times
        """True: every object and event gets a later second than the one before, so events
        order by ``created``. False: as at Stripe, what is made within one second shares that
        second (with a fixed ``clock``, every change lands in one second)."""
        self._last = 0
        self.offset = 0
        """Seconds added to the wall clock (move Stripe's time with :meth:`advance`)."""
        self.prices: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.invoice_payments: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.portal_sessions: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.meter_events: dict[str, dict[str, Any]] = {}
        """Meter events by ``identifier``."""
        self.meters: set[str] = set()
        """Event names of active meters; while empty, any event name is accepted."""
        self.meter_ids: dict[str, str] = {}
        """Meter id (``mtr_…``) → its event name."""
        self.requests: list[RecordedRequest] = []
        self.outbox: list[dict[str, Any]] = []
        """Events not yet handed out by :meth:`drain`."""
        self.events: list[dict[str, Any]] = []
        """Every event ever sent."""
        self._session_input: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[str, tuple[str, int, dict[str, Any]]] = {}
        self._faults: deque[_Fault] = deque()

    # -- wiring --------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """An httpx transport answering as Stripe (for ``make_api(transports=…)``)."""
        return httpx.MockTransport(self.handle)

    def env(self, api_base: str = "https://api.stripe.test") -> dict[str, str]:
        """The ``BILLING_GQL_STRIPE_*`` settings that point the plugin at this fake."""
        return {
            "BILLING_GQL_STRIPE_API_KEY": self.api_key,
            "BILLING_GQL_STRIPE_WEBHOOK_SECRET": self.webhook_secret,
            "BILLING_GQL_STRIPE_API_BASE": api_base,
        }

    # -- time ----------------------------------------------------------------------------------

    def now(self) -> int:
        """Stripe's current time (Unix seconds)."""
        return max(int(self._wall()) + self.offset, self._last)

    def tick(self) -> int:
        """A fresh time for an object or event: strictly increasing (so that events made one
        after the other are ordered by ``created``) unless ``distinct_times`` is off, when
        things made within one second share it, as at Stripe."""
        self._last = max(self.now(), self._last + 1 if self.distinct_times else self._last)
        return self._last

    def advance(self, seconds: int) -> None:
        """Move Stripe's clock forward."""
        self.offset += seconds

    # -- setup ---------------------------------------------------------------------------------

    def create_price(
        self,
        *,
        unit_amount: int,
        currency: str = "usd",
        interval: str | None = "month",
        interval_count: int = 1,
        trial_period_days: int | None = None,
        price_id: str | None = None,
        meter: str | None = None,
    ) -> str:
        """Add a price (recurring unless ``interval`` is ``None``); return its id.

        ``meter``: a meter id from :meth:`create_meter`: the price is metered
        (``recurring[usage_type]=metered``), billed from that meter's events; a Checkout
        Session line of it takes no ``quantity``."""
        if meter is not None and (interval is None or meter not in self.meter_ids):
            raise ValueError("a metered price needs an interval and a meter of this fake")
        price = load_fixture("price")
        pid = price_id or _new_id("price")
        price.update(
            id=pid,
            created=self.tick(),
            currency=currency.lower(),
            unit_amount=unit_amount,
            unit_amount_decimal=str(unit_amount),
            product=_new_id("prod"),
            transform_quantity=None,
            custom_unit_amount=None,
            type="recurring" if interval else "one_time",
            recurring=(
                {
                    "interval": interval,
                    "interval_count": interval_count,
                    "meter": meter,
                    "usage_type": "metered" if meter else "licensed",
                    "trial_period_days": trial_period_days,
                }
                if interval
                else None
            ),
        )
        self.prices[pid] = price
        return pid

    def create_meter(self, event_name: str) -> str:
        """Declare an active meter; meter events must then name a declared one. Returns its
        id (``mtr_…``), for :meth:`create_price`'s ``meter``."""
        self.meters.add(event_name)
        meter_id = _new_id("mtr")
        self.meter_ids[meter_id] = event_name
        return meter_id

    def create_customer(self, *, email: str | None = None) -> str:
        customer = load_fixture("customer")
        cid = _new_id("cus")
        customer.update(
            id=cid,
            created=self.tick(),
            email=email,
            discount=None,
            currency=None,
            invoice_prefix=secrets.token_hex(4).upper(),
        )
        self.customers[cid] = customer
        self._event("customer.created", customer)
        return cid

    # -- faults --------------------------------------------------------------------------------

    def fail_next(
        self, count: int = 1, *, status: int = 500, retry_after: str | None = None
    ) -> None:
        """Answer the next ``count`` calls with ``status`` (429: Stripe's ``rate_limit`` error
        code on an ``invalid_request_error``; a 5xx: an ``api_error``)."""
        for _ in range(count):
            if status == 429:
                body = {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "rate_limit",
                        "message": "Too many requests hit the API too quickly.",
                    }
                }
            else:
                body = {
                    "error": {
                        "type": "api_error",
                        "message": "Something went wrong on Stripe's end.",
                    }
                }
            headers = {"retry-after": retry_after} if retry_after is not None else {}
            self._faults.append(_Fault(status, body, headers))

    def error_next(
        self,
        status: int = 400,
        *,
        message: str = "Your card was declined.",
        type: str = "card_error",
        code: str | None = "card_declined",
        param: str | None = None,
    ) -> None:
        """Answer the next call with this error object."""
        error: dict[str, Any] = {"type": type, "message": message}
        if code is not None:
            error["code"] = code
        if param is not None:
            error["param"] = param
        self._faults.append(_Fault(status, {"error": error}))

    def clear_faults(self) -> None:
        """Forget the faults no call has consumed yet."""
        self._faults.clear()

    # -- HTTP ----------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as Stripe would."""
        headers = {"request-id": _new_id("req"), "stripe-version": STRIPE_VERSION}
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            given = auth.removeprefix("Bearer ").strip()
            shown = f"{given[:8]}{'*' * 12}{given[-4:]}" if len(given) > 12 else "****"
            body = {
                "error": {
                    "type": "invalid_request_error",
                    "message": f"Invalid API Key provided: {shown}",
                }
            }
            return self._response(401, body, headers)
        if self._faults:
            fault = self._faults.popleft()
            return self._response(fault.status, fault.body, {**headers, **fault.headers})
        raw = request.content if request.method in ("POST",) else request.url.query
        try:
            params = decode(raw)
        except (ValueError, UnicodeDecodeError):
            return self._response(
                400,
                StripeApiError(400, "Invalid request: unable to parse the body.").body,
                headers,
            )
        lowered = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(
            RecordedRequest(request.method, request.url.path, params, lowered, request.content)
        )
        key = lowered.get("idempotency-key") if request.method == "POST" else None
        fingerprint = json.dumps([request.method, request.url.path, params], sort_keys=True)
        if key is not None:
            if len(key) > 255:
                return self._response(
                    400,
                    StripeApiError(400, "Idempotency keys are limited to 255 characters.").body,
                    headers,
                )
            saved = self._idempotent.get(key)
            if saved is not None:
                if saved[0] != fingerprint:
                    error = StripeApiError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with. Try using a key other than "
                        f"'{key}' if you meant to execute a different request.",
                        type="idempotency_error",
                    )
                    return self._response(400, error.body, headers)
                return self._response(
                    saved[1],
                    copy.deepcopy(saved[2]),
                    {**headers, "idempotent-replayed": "true", "original-request": key},
                )
        try:
            status, body = 200, self._route(request.method, request.url.path, params, key)
        except StripeApiError as exc:
            status, body = exc.status, exc.body
            if key is not None and not exc.validation:
                self._idempotent[key] = (fingerprint, status, copy.deepcopy(body))
            return self._response(status, body, headers)
        if key is not None:
            self._idempotent[key] = (fingerprint, status, copy.deepcopy(body))
        return self._response(status, body, headers)

    def _response(
        self, status: int, body: dict[str, Any], headers: dict[str, str]
    ) -> httpx.Response:
        headers = {**headers, "date": email.utils.formatdate(self.now(), usegmt=True)}
        return httpx.Response(status, json=body, headers=headers)

    def _route(
        self, method: str, path: str, params: dict[str, Any], key: str | None
    ) -> dict[str, Any]:
        parts = path.strip("/").split("/")
        if parts[:1] != ["v1"]:
            raise self._unrecognized(method, path)
        rest = parts[1:]
        match (method, rest):
            case ("POST", ["checkout", "sessions"]):
                return self._create_session(params)
            case ("GET", ["checkout", "sessions", sid]):
                return copy.deepcopy(self._get(self.sessions, "checkout.session", sid))
            case ("POST", ["checkout", "sessions", sid, "expire"]):
                self._get(self.sessions, "checkout.session", sid)
                self.expire_checkout(sid)
                return copy.deepcopy(self.sessions[sid])
            case ("GET", ["subscriptions", sid]):
                return copy.deepcopy(self._get(self.subscriptions, "subscription", sid))
            case ("POST", ["subscriptions", sid]):
                return self._update_subscription(sid, params, key)
            case ("DELETE", ["subscriptions", sid]):
                _unknown_params(params, ("invoice_now", "prorate", "cancellation_details"))
                return self._delete_subscription(sid, key)
            case ("POST", ["subscriptions", sid, "resume"]):
                _unknown_params(params, ("billing_cycle_anchor", "proration_behavior"))
                return self._resume_subscription(sid, key)
            case ("GET", ["customers", cid]):
                return copy.deepcopy(self._get(self.customers, "customer", cid))
            case ("GET", ["prices", pid]):
                return copy.deepcopy(self._get(self.prices, "price", pid))
            case ("GET", ["invoices", iid]):
                return copy.deepcopy(self._get(self.invoices, "invoice", iid))
            case ("GET", ["invoice_payments"]):
                return self._list_invoice_payments(params)
            case ("POST", ["refunds"]):
                return self._create_refund(params)
            case ("GET", ["refunds"]):
                return self._list_refunds(params)
            case ("GET", ["refunds", rid]):
                return copy.deepcopy(self._get(self.refunds, "refund", rid))
            case ("POST", ["billing_portal", "sessions"]):
                return self._create_portal_session(params)
            case ("POST", ["billing", "meter_events"]):
                return self._create_meter_event(params)
        raise self._unrecognized(method, path)

    @staticmethod
    def _unrecognized(method: str, path: str) -> StripeApiError:
        return StripeApiError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs",
        )

    @staticmethod
    def _get(store: dict[str, dict[str, Any]], kind: str, ident: str) -> dict[str, Any]:
        found = store.get(ident)
        if found is None:
            raise _no_such(kind, ident)
        return found

    # -- checkout sessions ---------------------------------------------------------------------

    _SESSION_PARAMS = (
        "mode",
        "line_items",
        "success_url",
        "cancel_url",
        "client_reference_id",
        "metadata",
        "customer",
        "customer_email",
        "customer_creation",
        "expires_at",
        "subscription_data",
        "payment_intent_data",
        "ui_mode",
        "locale",
        "allow_promotion_codes",
        "currency",
    )

    def _create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        _unknown_params(params, self._SESSION_PARAMS)
        mode = params.get("mode")
        if mode is None:
            raise _missing("mode")
        if mode not in ("payment", "setup", "subscription"):
            raise StripeApiError(
                400, "Invalid mode: must be one of payment, setup, or subscription", param="mode"
            )
        if mode == "setup":
            raise StripeApiError(400, "The fake Stripe does not do setup mode.", param="mode")
        items = params.get("line_items")
        if not items:
            raise _missing("line_items")
        if not isinstance(items, list):
            raise StripeApiError(400, "Invalid array", param="line_items")
        total = 0
        currency = None
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise StripeApiError(400, "Invalid object", param=f"line_items[{index}]")
            _unknown_params(item, ("price", "quantity"))
            price_id = item.get("price")
            if not price_id:
                raise _missing(f"line_items[{index}][price]")
            price = self.prices.get(price_id)
            if price is None:
                raise _no_such("price", price_id, f"line_items[{index}][price]")
            quantity = _int(item, "quantity", minimum=1, prefix=f"line_items[{index}]")
            metered = _metered(price)
            if metered and quantity is not None:
                # Stripe bills a metered price from its meter's events: no quantity.
                raise StripeApiError(
                    400,
                    "Quantity should not be specified where usage_type is `metered`. Remove "
                    f"quantity from `line_items[{index}]`",
                    param=f"line_items[{index}][quantity]",
                )
            if quantity is None and not metered:
                raise _missing(f"line_items[{index}][quantity]")
            recurring = price["recurring"] is not None
            if mode == "payment" and recurring:
                raise StripeApiError(
                    400,
                    "You specified `payment` mode but passed a recurring price. Either switch to "
                    "`subscription` mode or use only one-time prices.",
                    param="line_items",
                )
            if quantity is not None:
                total += price["unit_amount"] * quantity
            elif currency is not None and price["currency"] != currency:
                raise StripeApiError(
                    400, "All prices must be in the same currency.", param="line_items"
                )
            currency = currency or price["currency"]
        if mode == "subscription" and not any(self.prices[i["price"]]["recurring"] for i in items):
            raise StripeApiError(
                400,
                "You must provide at least one recurring price in `subscription` mode when "
                "using prices.",
                param="line_items",
            )
        success_url = params.get("success_url")
        if not success_url:
            raise _missing("success_url")
        customer = params.get("customer")
        email = params.get("customer_email")
        if customer and email:
            raise StripeApiError(
                400,
                "You may only specify one of these parameters: customer, customer_email.",
                param="customer_email",
            )
        if customer and customer not in self.customers:
            raise _no_such("customer", customer, "customer")
        creation = params.get("customer_creation")
        if creation is not None:
            if mode != "payment":
                raise StripeApiError(
                    400,
                    "`customer_creation` can only be used in `payment` mode.",
                    param="customer_creation",
                )
            if customer:
                raise StripeApiError(
                    400,
                    "You may only specify one of these parameters: customer, customer_creation.",
                    param="customer_creation",
                )
            if creation not in ("always", "if_required"):
                raise StripeApiError(400, "Invalid customer_creation", param="customer_creation")
        metadata = _metadata(params.get("metadata"), "metadata")
        sub_data = params.get("subscription_data") or {}
        if sub_data:
            if mode != "subscription":
                raise StripeApiError(
                    400,
                    "You can not pass `subscription_data` in `payment` mode.",
                    param="subscription_data",
                )
            _unknown_params(
                sub_data, ("metadata", "trial_period_days", "proration_behavior", "description")
            )
            _metadata(sub_data.get("metadata"), "subscription_data[metadata]")
            _int(sub_data, "trial_period_days", minimum=1, prefix="subscription_data")
        pi_data = params.get("payment_intent_data") or {}
        if pi_data:
            if mode != "payment":
                raise StripeApiError(
                    400,
                    "You can not pass `payment_intent_data` in `subscription` mode.",
                    param="payment_intent_data",
                )
            _unknown_params(pi_data, ("metadata", "description"))
            _metadata(pi_data.get("metadata"), "payment_intent_data[metadata]")
        created = self.tick()
        expires_at = _int(params, "expires_at")
        if expires_at is None:
            expires_at = created + 86400
        elif not (created + 1800 <= expires_at <= created + 86400):
            raise StripeApiError(
                400,
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from the "
                "Checkout Session's creation.",
                param="expires_at",
            )
        session = load_fixture("checkout.session")
        sid = _new_id("cs_test")
        session.update(
            id=sid,
            created=created,
            mode=mode,
            status="open",
            payment_status="unpaid",
            url=f"https://checkout.stripe.com/c/pay/{sid}",
            success_url=success_url,
            cancel_url=params.get("cancel_url"),
            client_reference_id=params.get("client_reference_id"),
            customer=customer,
            customer_email=email,
            customer_creation=creation,
            customer_details=None,
            metadata=metadata,
            expires_at=expires_at,
            amount_subtotal=total,
            amount_total=total,
            currency=currency,
            subscription=None,
            invoice=None,
            payment_intent=None,
            locale=params.get("locale"),
            ui_mode=params.get("ui_mode") or "hosted_page",
            after_expiration=None,
            shipping_address_collection=None,
            shipping_cost=None,
            currency_conversion=None,
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            collected_information=None,
            managed_payments=None,
            payment_method_configuration_details=None,
        )
        self.sessions[sid] = session
        self._session_input[sid] = copy.deepcopy(params)
        return copy.deepcopy(session)

    def payment_link_session(self, price_id: str, client_reference_id: str) -> str:
        """A buyer opens a Payment Link (or a pricing table) of ``price_id`` with
        ``?client_reference_id=…`` in its URL: Stripe creates a Checkout Session carrying that
        reference, without metadata of ours. Returns the session id (pay it with
        :meth:`complete_checkout`)."""
        recurring = self.prices[price_id]["recurring"] is not None
        session = self._create_session(
            {
                "mode": "subscription" if recurring else "payment",
                "line_items": [{"price": price_id, "quantity": "1"}],
                "success_url": "https://buy.stripe.com/success",
                "client_reference_id": client_reference_id,
            }
        )
        return str(session["id"])

    def session_for(self, checkout_id: str) -> dict[str, Any]:
        """The (newest) Checkout Session created for our checkout id (``client_reference_id``)."""
        found = [s for s in self.sessions.values() if s.get("client_reference_id") == checkout_id]
        if not found:
            raise KeyError(f"no Checkout Session for checkout {checkout_id}")
        return found[-1]

    def _session_customer(self, session: dict[str, Any]) -> str | None:
        if session["customer"]:
            return str(session["customer"])
        if session["mode"] == "subscription" or session.get("customer_creation") == "always":
            return self.create_customer(email=session.get("customer_email"))
        return None

    def complete_checkout(
        self, session_id: str, *, async_payment: bool = False
    ) -> list[dict[str, Any]]:
        """The buyer pays: Stripe creates the customer, subscription, invoice and payment, and
        queues the events it would send. ``async_payment`` (payment mode): the session
        completes unpaid and :meth:`settle_async_payment` decides later. Returns the events."""
        session = self.sessions[session_id]
        if session["status"] != "open":
            raise ValueError(f"session {session_id} is {session['status']}")
        start = len(self.outbox)
        params = self._session_input[session_id]
        customer = self._session_customer(session)
        item = params["line_items"][0]
        price = self.prices[item["price"]]
        quantity = int(item["quantity"])
        session.update(
            status="complete",
            customer=customer,
            customer_details={
                "address": None,
                "email": session.get("customer_email")
                or (self.customers[customer]["email"] if customer else None),
                "name": None,
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": [],
                "business_name": None,
                "individual_name": None,
            },
        )
        if session["mode"] == "subscription":
            sub_data = params.get("subscription_data") or {}
            trial_days = _int(sub_data, "trial_period_days") or price["recurring"].get(
                "trial_period_days"
            )
            assert customer is not None
            sub = self._new_subscription(
                customer, price, quantity, sub_data.get("metadata") or {}, trial_days
            )
            self._add_metered_items(sub, params["line_items"][1:])
            invoice = self._new_invoice(sub, "subscription_create", paid=True)
            session.update(
                subscription=sub["id"],
                invoice=invoice["id"],
                payment_status="paid" if invoice["amount_paid"] > 0 else "no_payment_required",
            )
            self._event("customer.subscription.created", sub)
            self._invoice_events(invoice, paid=True)
            self._event("checkout.session.completed", session)
        else:
            pi_meta = (params.get("payment_intent_data") or {}).get("metadata") or {}
            intent = self._new_payment(
                customer,
                session["amount_total"],
                session["currency"],
                pi_meta,
                succeeded=not async_payment,
            )
            session["payment_intent"] = intent["id"]
            session["payment_status"] = "unpaid" if async_payment else "paid"
            if not async_payment:
                self._payment_events(intent)
            self._event("checkout.session.completed", session)
        return self.outbox[start:]

    def settle_async_payment(
        self, session_id: str, *, succeeded: bool = True
    ) -> list[dict[str, Any]]:
        """The delayed payment of a completed payment-mode session succeeds or fails."""
        session = self.sessions[session_id]
        start = len(self.outbox)
        intent = self.payment_intents[session["payment_intent"]]
        if succeeded:
            self._succeed_payment(intent)
            session["payment_status"] = "paid"
            self._payment_events(intent)
            self._event("checkout.session.async_payment_succeeded", session)
        else:
            intent["status"] = "requires_payment_method"
            self._event("payment_intent.payment_failed", intent)
            self._event("checkout.session.async_payment_failed", session)
        return self.outbox[start:]

    def expire_checkout(self, session_id: str) -> list[dict[str, Any]]:
        """The session expires unpaid (``checkout.session.expired``)."""
        session = self.sessions[session_id]
        if session["status"] != "open":
            raise StripeApiError(
                400,
                f"Only Checkout Sessions with a status of `open` can be expired. This session "
                f"has a status of `{session['status']}`.",
                validation=False,
            )
        start = len(self.outbox)
        session["status"] = "expired"
        self._event("checkout.session.expired", session)
        return self.outbox[start:]

    # -- subscriptions -------------------------------------------------------------------------

    def _item(
        self, sub_id: str, price: dict[str, Any], quantity: int, start: int, end: int
    ) -> dict[str, Any]:
        item = load_fixture("subscription_item")
        plan = item["plan"]
        recurring = price["recurring"]
        plan.update(
            id=price["id"],
            amount=price["unit_amount"],
            amount_decimal=str(price["unit_amount"]),
            billing_scheme="per_unit",
            created=price["created"],
            currency=price["currency"],
            interval=recurring["interval"],
            interval_count=recurring["interval_count"],
            livemode=False,
            product=price["product"],
            transform_usage=None,
        )
        item.update(
            id=_new_id("si"),
            created=self.tick(),
            price=copy.deepcopy(price),
            plan=plan,
            quantity=quantity,
            subscription=sub_id,
            current_period_start=start,
            current_period_end=end,
            billing_thresholds=None,
        )
        return item

    def _new_subscription(
        self,
        customer: str,
        price: dict[str, Any],
        quantity: int,
        metadata: dict[str, str],
        trial_days: int | None,
    ) -> dict[str, Any]:
        now = self.tick()
        sub_id = _new_id("sub")
        recurring = price["recurring"]
        trial_end = now + 86400 * trial_days if trial_days else None
        end = trial_end or _add_interval(now, recurring["interval"], recurring["interval_count"])
        sub = load_fixture("subscription")
        sub.update(
            id=sub_id,
            created=now,
            start_date=now,
            billing_cycle_anchor=end if trial_end else now,
            billing_cycle_anchor_config=None,
            customer=customer,
            currency=price["currency"],
            status="trialing" if trial_end else "active",
            trial_start=now if trial_end else None,
            trial_end=trial_end,
            cancel_at=None,
            cancel_at_period_end=False,
            canceled_at=None,
            ended_at=None,
            pause_collection=None,
            pending_update=None,
            pending_invoice_item_interval=None,
            next_pending_invoice_item_invoice=None,
            transfer_data=None,
            billing_schedules=[],
            managed_payments=None,
            metadata=dict(metadata),
            items={
                "object": "list",
                "data": [self._item(sub_id, price, quantity, now, end)],
                "has_more": False,
                "total_count": 1,
                "url": f"/v1/subscription_items?subscription={sub_id}",
            },
        )
        self.subscriptions[sub_id] = sub
        return sub

    def _subscription(self, sub_id: str) -> dict[str, Any]:
        return self._get(self.subscriptions, "subscription", sub_id)

    def _add_metered_items(self, sub: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        """The session's further lines (metered prices) as subscription items without a
        quantity, in the first item's period."""
        first = sub["items"]["data"][0]
        for line in lines:
            price = self.prices[line["price"]]
            item = self._item(
                sub["id"],
                price,
                1,
                first["current_period_start"],
                first["current_period_end"],
            )
            item["quantity"] = None if _metered(price) else int(line["quantity"])
            sub["items"]["data"].append(item)
        sub["items"]["total_count"] = len(sub["items"]["data"])

    def _changed(
        self,
        sub: dict[str, Any],
        before: dict[str, Any],
        event_type: str = "customer.subscription.updated",
        key: str | None = None,
    ) -> None:
        previous = {k: before[k] for k in sub if k in before and before[k] != sub[k]}
        self._event(event_type, sub, previous_attributes=previous or None, idempotency_key=key)

    def _update_subscription(
        self, sub_id: str, params: dict[str, Any], key: str | None
    ) -> dict[str, Any]:
        sub = self._subscription(sub_id)
        _unknown_params(
            params,
            (
                "cancel_at_period_end",
                "cancel_at",
                "pause_collection",
                "items",
                "proration_behavior",
                "proration_date",
                "payment_behavior",
                "metadata",
                "cancellation_details",
                "description",
            ),
        )
        ended = sub["status"] in ("canceled", "incomplete_expired")
        if ended and set(params) - {"metadata", "cancellation_details"}:
            raise StripeApiError(
                400,
                "A canceled subscription can only update its cancellation_details and metadata.",
            )
        if "cancel_at_period_end" in params and params.get("cancel_at"):
            raise StripeApiError(
                400,
                "You may only specify one of these parameters: cancel_at, cancel_at_period_end.",
                param="cancel_at",
            )
        proration = params.get("proration_behavior")
        if proration is not None and proration not in (
            "create_prorations",
            "none",
            "always_invoice",
        ):
            raise StripeApiError(
                400, f"Invalid proration_behavior: {proration}", param="proration_behavior"
            )
        before = copy.deepcopy(sub)
        now = self.tick()
        item = sub["items"]["data"][0]
        at_period_end = _bool(params, "cancel_at_period_end")
        if at_period_end is not None:
            sub["cancel_at_period_end"] = at_period_end
            sub["cancel_at"] = item["current_period_end"] if at_period_end else None
            sub["canceled_at"] = now if at_period_end else None
        if "cancel_at" in params:
            cancel_at = _int(params, "cancel_at")
            sub["cancel_at"] = cancel_at
            sub["canceled_at"] = now if cancel_at else None
        if "pause_collection" in params:
            pause = params["pause_collection"]
            if pause == "":
                sub["pause_collection"] = None
            else:
                if not isinstance(pause, dict) or "behavior" not in pause:
                    raise _missing("pause_collection[behavior]")
                behavior = pause["behavior"]
                if behavior not in ("keep_as_draft", "mark_uncollectible", "void"):
                    raise StripeApiError(
                        400, f"Invalid behavior: {behavior}", param="pause_collection[behavior]"
                    )
                sub["pause_collection"] = {
                    "behavior": behavior,
                    "resumes_at": _int(pause, "resumes_at", prefix="pause_collection"),
                }
        if "items" in params:
            self._change_items(sub, params["items"], now)
        if "metadata" in params:
            meta = params["metadata"]
            if meta == "":
                sub["metadata"] = {}
            else:
                merged = {**sub["metadata"], **_metadata(meta, "metadata")}
                sub["metadata"] = {k: v for k, v in merged.items() if v != ""}
        self._changed(sub, before, key=key)
        return copy.deepcopy(sub)

    def _change_items(self, sub: dict[str, Any], items: object, now: int) -> None:
        if not isinstance(items, list):
            raise StripeApiError(400, "Invalid array", param="items")
        for index, change in enumerate(items):
            if not isinstance(change, dict):
                raise StripeApiError(400, "Invalid object", param=f"items[{index}]")
            _unknown_params(change, ("id", "price", "quantity", "deleted"))
            existing = [i for i in sub["items"]["data"] if i["id"] == change.get("id")]
            if not existing:
                raise _no_such("subscription item", str(change.get("id")), f"items[{index}][id]")
            item = existing[0]
            if "price" in change:
                price = self.prices.get(change["price"])
                if price is None:
                    raise _no_such("price", change["price"], f"items[{index}][price]")
                if price["recurring"] is None:
                    raise StripeApiError(
                        400,
                        "The price specified is set to `type=one_time` but this field only "
                        "accepts prices with `type=recurring`.",
                        param=f"items[{index}][price]",
                    )
                old = item["price"]["recurring"]
                new = price["recurring"]
                item["price"] = copy.deepcopy(price)
                item["plan"].update(
                    id=price["id"],
                    amount=price["unit_amount"],
                    interval=new["interval"],
                    interval_count=new["interval_count"],
                )
                if (old["interval"], old["interval_count"]) != (
                    new["interval"],
                    new["interval_count"],
                ):
                    # An interval change starts a new billing period now.
                    item["current_period_start"] = now
                    item["current_period_end"] = _add_interval(
                        now, new["interval"], new["interval_count"]
                    )
                    sub["billing_cycle_anchor"] = now
            quantity = _int(change, "quantity", minimum=1, prefix=f"items[{index}]")
            if quantity is not None:
                item["quantity"] = quantity

    def _delete_subscription(self, sub_id: str, key: str | None) -> dict[str, Any]:
        sub = self._subscription(sub_id)
        if sub["status"] == "canceled":
            raise StripeApiError(
                400,
                f"No such subscription: '{sub_id}'; it has already been canceled.",
                code="resource_missing",
                validation=False,
            )
        before = copy.deepcopy(sub)
        now = self.tick()
        sub.update(status="canceled", canceled_at=now, ended_at=now, cancel_at=None)
        self._changed(sub, before, "customer.subscription.deleted", key)
        return copy.deepcopy(sub)

    def _resume_subscription(self, sub_id: str, key: str | None) -> dict[str, Any]:
        sub = self._subscription(sub_id)
        if sub["status"] != "paused":
            raise StripeApiError(400, "Only paused subscriptions can be resumed.", validation=False)
        before = copy.deepcopy(sub)
        now = self.tick()
        item = sub["items"]["data"][0]
        recurring = item["price"]["recurring"]
        item["current_period_start"] = now
        item["current_period_end"] = _add_interval(
            now, recurring["interval"], recurring["interval_count"]
        )
        sub["status"] = "active"
        self._changed(sub, before, "customer.subscription.resumed", key)
        return copy.deepcopy(sub)

    def cancel(self, sub_id: str, *, at_period_end: bool = False) -> list[dict[str, Any]]:
        """Cancel from the dashboard; returns the events sent."""
        start = len(self.outbox)
        if at_period_end:
            self._update_subscription(sub_id, {"cancel_at_period_end": "true"}, None)
        else:
            self._delete_subscription(sub_id, None)
        return self.outbox[start:]

    def pause(self, sub_id: str) -> list[dict[str, Any]]:
        """Stripe pauses the subscription itself (a trial ended without a payment method)."""
        sub = self._subscription(sub_id)
        start = len(self.outbox)
        before = copy.deepcopy(sub)
        self.tick()
        sub["status"] = "paused"
        self._changed(sub, before, "customer.subscription.paused")
        return self.outbox[start:]

    def renew(self, sub_id: str) -> list[dict[str, Any]]:
        """The period ends and Stripe charges the next one (or ends a pending cancel)."""
        sub = self._subscription(sub_id)
        start = len(self.outbox)
        item = sub["items"]["data"][0]
        before = copy.deepcopy(sub)
        self.tick()
        if sub["cancel_at_period_end"]:
            now = self.tick()
            sub.update(status="canceled", ended_at=now)
            self._changed(sub, before, "customer.subscription.deleted")
            return self.outbox[start:]
        recurring = item["price"]["recurring"]
        item["current_period_start"] = item["current_period_end"]
        item["current_period_end"] = _add_interval(
            item["current_period_start"], recurring["interval"], recurring["interval_count"]
        )
        sub["status"] = "active"
        invoice = self._new_invoice(sub, "subscription_cycle", paid=True)
        self._changed(sub, before)
        self._invoice_events(invoice, paid=True)
        return self.outbox[start:]

    def fail_payment(self, sub_id: str) -> list[dict[str, Any]]:
        """The renewal charge fails: the invoice stays open, the subscription goes past_due."""
        sub = self._subscription(sub_id)
        start = len(self.outbox)
        before = copy.deepcopy(sub)
        item = sub["items"]["data"][0]
        recurring = item["price"]["recurring"]
        item["current_period_start"] = item["current_period_end"]
        item["current_period_end"] = _add_interval(
            item["current_period_start"], recurring["interval"], recurring["interval_count"]
        )
        invoice = self._new_invoice(sub, "subscription_cycle", paid=False)
        sub["status"] = "past_due"
        self._invoice_events(invoice, paid=False)
        self._changed(sub, before)
        return self.outbox[start:]

    def void_invoice(self, invoice_id: str) -> list[dict[str, Any]]:
        """An operator voids an open invoice in the dashboard: ``invoice.voided``."""
        invoice = self._get(self.invoices, "invoice", invoice_id)
        if invoice["status"] != "open":
            raise ValueError(f"invoice {invoice_id} is {invoice['status']}, not open")
        start = len(self.outbox)
        now = self.tick()
        invoice.update(status="void", amount_remaining=0, next_payment_attempt=None)
        invoice["status_transitions"]["voided_at"] = now
        self._event("invoice.voided", invoice)
        return self.outbox[start:]

    # -- invoices and payments -----------------------------------------------------------------

    def _new_payment(
        self,
        customer: str | None,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        *,
        succeeded: bool,
    ) -> dict[str, Any]:
        intent = load_fixture("payment_intent")
        pid = _new_id("pi")
        intent.update(
            id=pid,
            created=self.tick(),
            amount=amount,
            amount_received=0,
            currency=currency,
            customer=customer,
            metadata=dict(metadata),
            client_secret=f"{pid}_secret_{_new_id('x')[2:]}",
            canceled_at=None,
            last_payment_error=None,
            next_action=None,
            processing=None,
            transfer_data=None,
            payment_method_configuration_details=None,
            managed_payments=None,
            status="processing",
            latest_charge=None,
        )
        self.payment_intents[pid] = intent
        if succeeded:
            self._succeed_payment(intent)
        return intent

    def _succeed_payment(self, intent: dict[str, Any]) -> dict[str, Any]:
        charge = load_fixture("charge")
        cid = _new_id("ch")
        charge.update(
            id=cid,
            created=self.tick(),
            amount=intent["amount"],
            amount_captured=intent["amount"],
            amount_refunded=0,
            captured=True,
            currency=intent["currency"],
            customer=intent["customer"],
            description=None,
            payment_intent=intent["id"],
            balance_transaction=_new_id("txn"),
            metadata=dict(intent["metadata"]),
            refunded=False,
            status="succeeded",
            paid=True,
            source=None,
            transfer_data=None,
            refunds={
                "object": "list",
                "data": [],
                "has_more": False,
                "url": f"/v1/charges/{cid}/refunds",
            },
            receipt_url=f"https://pay.stripe.com/receipts/{cid}",
        )
        self.charges[cid] = charge
        intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=cid)
        return charge

    def _payment_events(self, intent: dict[str, Any]) -> None:
        self._event("payment_intent.succeeded", intent)
        self._event("charge.succeeded", self.charges[intent["latest_charge"]])

    def _new_invoice(self, sub: dict[str, Any], reason: str, *, paid: bool) -> dict[str, Any]:
        item = sub["items"]["data"][0]
        trialing = sub["status"] == "trialing" and reason == "subscription_create"
        amount = 0 if trialing else item["price"]["unit_amount"] * item["quantity"]
        invoice = load_fixture("invoice")
        iid = _new_id("in")
        now = self.tick()
        line = invoice["lines"]["data"][0]
        line.update(
            id=_new_id("il"),
            amount=amount,
            subtotal=amount,
            currency=sub["currency"],
            description=f"{item['quantity']} × {item['price']['id']}",
            invoice=iid,
            period={"start": item["current_period_start"], "end": item["current_period_end"]},
            quantity=item["quantity"],
            parent={
                "type": "subscription_item_details",
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": sub["id"],
                    "subscription_item": item["id"],
                },
            },
            pricing={
                "type": "price_details",
                "price_details": {
                    "price": item["price"]["id"],
                    "product": item["price"]["product"],
                },
                "unit_amount_decimal": str(item["price"]["unit_amount"]),
            },
        )
        prefix = self.customers[sub["customer"]]["invoice_prefix"]
        intent = None
        if amount > 0 and paid:
            intent = self._new_payment(sub["customer"], amount, sub["currency"], {}, succeeded=True)
        invoice.update(
            id=iid,
            created=now,
            customer=sub["customer"],
            currency=sub["currency"],
            billing_reason=reason,
            amount_due=amount,
            amount_paid=amount if paid else 0,
            amount_remaining=0 if paid else amount,
            amount_overpaid=0,
            subtotal=amount,
            subtotal_excluding_tax=amount,
            total=amount,
            total_excluding_tax=amount,
            attempt_count=1 if amount > 0 else 0,
            attempted=amount > 0,
            auto_advance=not paid,
            status="paid" if paid else "open",
            status_transitions={
                "finalized_at": now,
                "marked_uncollectible_at": None,
                "paid_at": now if paid else None,
                "voided_at": None,
            },
            period_start=item["current_period_start"],
            period_end=item["current_period_end"],
            parent={
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "metadata": dict(sub["metadata"]),
                    "subscription": sub["id"],
                },
            },
            hosted_invoice_url=f"https://invoice.stripe.com/i/{iid}",
            invoice_pdf=f"https://pay.stripe.com/invoice/{iid}/pdf",
            number=f"{prefix}-{len(self.invoices) + 1:04d}",
            from_invoice=None,
            last_finalization_error=None,
            next_payment_attempt=None if paid else now + 3 * 86400,
            due_date=None,
            effective_at=now,
            shipping_cost=None,
            webhooks_delivered_at=None,
        )
        self.invoices[iid] = invoice
        sub["latest_invoice"] = iid
        if intent is not None:
            payment = load_fixture("invoice_payment")
            payment.update(
                id=_new_id("inpay"),
                created=now,
                amount_paid=amount,
                amount_requested=amount,
                currency=sub["currency"],
                invoice=iid,
                livemode=False,
                payment={"type": "payment_intent", "payment_intent": intent["id"]},
                status="paid",
                status_transitions={"canceled_at": None, "paid_at": now},
            )
            self.invoice_payments[payment["id"]] = payment
        return invoice

    def _invoice_events(self, invoice: dict[str, Any], *, paid: bool) -> None:
        self._event("invoice.finalized", invoice)
        if paid:
            self._event("invoice.paid", invoice)
            self._event("invoice.payment_succeeded", invoice)
        else:
            self._event("invoice.payment_failed", invoice)

    def _list_invoice_payments(self, params: dict[str, Any]) -> dict[str, Any]:
        _unknown_params(
            params, ("invoice", "payment", "status", "limit", "starting_after", "ending_before")
        )
        found = list(self.invoice_payments.values())
        if "invoice" in params:
            found = [p for p in found if p["invoice"] == params["invoice"]]
        payment = params.get("payment")
        if isinstance(payment, dict):
            if payment.get("type") != "payment_intent":
                raise StripeApiError(400, "Invalid payment[type]", param="payment[type]")
            found = [
                p
                for p in found
                if p["payment"].get("payment_intent") == payment.get("payment_intent")
            ]
        return {
            "object": "list",
            "data": copy.deepcopy(found),
            "has_more": False,
            "url": "/v1/invoice_payments",
        }

    def _charge_of(self, payment_ref: str) -> dict[str, Any]:
        """The charge that collected a payment: an invoice, payment intent or charge id."""
        intent_id = payment_ref
        if payment_ref in self.invoices:
            linked = [p for p in self.invoice_payments.values() if p["invoice"] == payment_ref]
            intent_id = linked[0]["payment"]["payment_intent"]
        if intent_id in self.payment_intents:
            return self.charges[self.payment_intents[intent_id]["latest_charge"]]
        return self.charges[payment_ref]

    def _make_refund(
        self,
        charge: dict[str, Any],
        amount: int,
        *,
        metadata: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Refund ``amount`` of ``charge`` (checked by the caller); queue ``charge.refunded``
        and ``refund.created`` as Stripe sends them."""
        before = copy.deepcopy(charge)
        refund = load_fixture("refund")
        refund.update(
            id=_new_id("re"),
            created=self.tick(),
            amount=amount,
            charge=charge["id"],
            currency=charge["currency"],
            payment_intent=charge["payment_intent"],
            balance_transaction=_new_id("txn"),
            destination_details=None,
            metadata=dict(metadata or {}),
            reason=reason,
            status="succeeded",
        )
        self.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        charge["refunds"]["data"].append(copy.deepcopy(refund))
        previous = {k: before[k] for k in ("amount_refunded", "refunded") if before[k] != charge[k]}
        self._event("charge.refunded", charge, previous_attributes=previous)
        self._event("refund.created", refund)
        return refund

    def refund(
        self, payment_ref: str, amount: int | None = None, *, metadata: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Refund (part of) a payment — an invoice, payment intent or charge id — from the
        dashboard (or, with ``metadata``, as an API call whose answer was lost); returns the
        events (``charge.refunded``, ``refund.created``)."""
        charge = self._charge_of(payment_ref)
        start = len(self.outbox)
        remaining = charge["amount"] - charge["amount_refunded"]
        value = remaining if amount is None else amount
        if not 0 < value <= remaining:
            raise ValueError("refund amount exceeds what remains")
        self._make_refund(charge, value, metadata=metadata)
        return self.outbox[start:]

    def open_dispute(
        self, payment_ref: str, *, reason: str = "fraudulent"
    ) -> tuple[str, list[dict[str, Any]]]:
        """The buyer's bank opens a chargeback on a payment (an invoice, payment intent or
        charge id): ``charge.dispute.created``. Returns the dispute id and the events."""
        charge = self._charge_of(payment_ref)
        start = len(self.outbox)
        dispute = load_fixture("dispute")
        dispute.update(
            id=_new_id("dp"),
            created=self.tick(),
            amount=charge["amount"],
            currency=charge["currency"],
            charge=charge["id"],
            payment_intent=charge["payment_intent"],
            reason=reason,
            status="needs_response",
            is_charge_refundable=False,
        )
        self.disputes[dispute["id"]] = dispute
        charge["disputed"] = True
        self._event("charge.dispute.created", dispute)
        return dispute["id"], self.outbox[start:]

    def update_dispute(self, dispute_id: str, status: str) -> list[dict[str, Any]]:
        """The dispute moves on: ``under_review`` (evidence sent) gives
        ``charge.dispute.updated``; ``won``, ``lost`` or ``warning_closed`` close it
        (``charge.dispute.closed``). Returns the events."""
        dispute = self.disputes[dispute_id]
        if dispute["status"] in ("won", "lost", "warning_closed"):
            raise ValueError(f"dispute {dispute_id} is closed ({dispute['status']})")
        start = len(self.outbox)
        previous = {"status": dispute["status"]}
        dispute["status"] = status
        closed = status in ("won", "lost", "warning_closed")
        kind = "charge.dispute.closed" if closed else "charge.dispute.updated"
        self._event(kind, dispute, previous_attributes=previous)
        return self.outbox[start:]

    _REFUND_PARAMS = (
        "charge",
        "payment_intent",
        "amount",
        "metadata",
        "reason",
        "refund_application_fee",
        "reverse_transfer",
        "instructions_email",
        "expand",
    )

    def _create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/refunds``: a charge or a payment intent, at most what is left of it."""
        _unknown_params(params, self._REFUND_PARAMS)
        charge_id, intent_id = params.get("charge"), params.get("payment_intent")
        if (charge_id is None) == (intent_id is None):
            raise StripeApiError(
                400, "You must pass either a charge or a payment_intent.", param="charge"
            )
        if intent_id is not None:
            intent = self._get(self.payment_intents, "payment_intent", str(intent_id))
            if not intent.get("latest_charge"):
                raise StripeApiError(
                    400,
                    f"This PaymentIntent ({intent_id}) does not have a successful charge to "
                    "refund.",
                    code="charge_not_refundable",
                    validation=False,
                )
            charge = self.charges[intent["latest_charge"]]
        else:
            found = self.charges.get(str(charge_id))
            if found is None:
                raise _no_such("charge", str(charge_id), "charge")
            charge = found
        reason = params.get("reason")
        if reason is not None and reason not in (
            "duplicate",
            "fraudulent",
            "requested_by_customer",
        ):
            raise StripeApiError(400, f"Invalid reason: {reason}", param="reason")
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            raise StripeApiError(
                400,
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
                validation=False,
            )
        amount = _int(params, "amount")
        value = remaining if amount is None else amount
        if value < 1:
            raise StripeApiError(400, "Invalid positive integer", param="amount")
        if value > remaining:
            raise StripeApiError(
                400,
                f"Refund amount ({value}) is greater than unrefunded amount on charge "
                f"({remaining})",
                param="amount",
                code="amount_too_large",
                validation=False,
            )
        metadata = _metadata(params.get("metadata", {}), "metadata")
        return copy.deepcopy(self._make_refund(charge, value, metadata=metadata, reason=reason))

    def _list_refunds(self, params: dict[str, Any]) -> dict[str, Any]:
        """``GET /v1/refunds`` (filters ``charge``, ``payment_intent``), newest first."""
        _unknown_params(
            params, ("charge", "payment_intent", "limit", "starting_after", "ending_before")
        )
        found = sorted(self.refunds.values(), key=lambda r: r["created"], reverse=True)
        for key in ("charge", "payment_intent"):
            if key in params:
                found = [r for r in found if r[key] == params[key]]
        return {
            "object": "list",
            "data": copy.deepcopy(found),
            "has_more": False,
            "url": "/v1/refunds",
        }

    # -- portal, meter events ------------------------------------------------------------------

    def _create_portal_session(self, params: dict[str, Any]) -> dict[str, Any]:
        _unknown_params(
            params,
            ("customer", "return_url", "configuration", "flow_data", "locale", "on_behalf_of"),
        )
        customer = params.get("customer")
        if not customer:
            raise _missing("customer")
        if customer not in self.customers:
            raise _no_such("customer", customer, "customer")
        session = load_fixture("billing_portal.session")
        sid = _new_id("bps")
        session.update(
            id=sid,
            created=self.tick(),
            customer=customer,
            return_url=params.get("return_url"),
            url=f"https://billing.stripe.com/p/session/test_{sid[4:]}",
            flow=None,
            livemode=False,
            locale=params.get("locale"),
            configuration=params.get("configuration") or "bpc_fakeDefaultConfiguration",
        )
        self.portal_sessions[sid] = session
        return copy.deepcopy(session)

    def _create_meter_event(self, params: dict[str, Any]) -> dict[str, Any]:
        _unknown_params(params, ("event_name", "payload", "identifier", "timestamp"))
        name = params.get("event_name")
        if not name:
            raise _missing("event_name")
        if self.meters and name not in self.meters:
            raise StripeApiError(
                400, f"No active meter was found for event_name '{name}'.", param="event_name"
            )
        payload = params.get("payload")
        if not isinstance(payload, dict):
            raise _missing("payload")
        for key in ("stripe_customer_id", "value"):
            if not payload.get(key):
                raise _missing(f"payload[{key}]")
        try:
            float(payload["value"])
        except ValueError:
            raise StripeApiError(
                400, "The value must be a number.", param="payload[value]"
            ) from None
        now = self.now()
        stamp = _int(params, "timestamp")
        if stamp is None:
            stamp = now
        elif not (now - 35 * 86400 <= stamp <= now + 300):
            raise StripeApiError(
                400,
                "Timestamp must be within the past 35 calendar days and no more than 5 minutes "
                "in the future.",
                param="timestamp",
            )
        identifier = params.get("identifier") or _new_id("mev")
        if identifier in self.meter_events:
            raise StripeApiError(
                400,
                f"An event already exists with identifier {identifier}.",
                param="identifier",
                validation=False,
            )
        event = load_fixture("billing.meter_event")
        event.update(
            created=self.tick(),
            event_name=name,
            identifier=identifier,
            payload=dict(payload),
            timestamp=stamp,
        )
        self.meter_events[identifier] = event
        return copy.deepcopy(event)

    # -- events and deliveries -----------------------------------------------------------------

    def _event(
        self,
        event_type: str,
        obj: Mapping[str, Any],
        *,
        previous_attributes: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        event = load_fixture("event")
        data: dict[str, Any] = {"object": copy.deepcopy(dict(obj))}
        if previous_attributes:
            data["previous_attributes"] = copy.deepcopy(dict(previous_attributes))
        event.update(
            id=_new_id("evt"),
            api_version=STRIPE_VERSION,
            created=self.tick(),
            data=data,
            livemode=False,
            pending_webhooks=1,
            request={
                "id": _new_id("req") if idempotency_key else None,
                "idempotency_key": idempotency_key,
            },
            type=event_type,
        )
        self.outbox.append(event)
        self.events.append(event)
        return event

    def sign(self, body: bytes, *, timestamp: int | None = None, secret: str | None = None) -> str:
        """A ``Stripe-Signature`` header for ``body`` (now, with the webhook secret).

        Computed here from Stripe's recipe (hex HMAC-SHA256 of ``"{t}.{body}"`` keyed by the
        ``whsec_…`` string as it is), not with the plugin's code, so that a drift between the
        plugin's verifier and Stripe's scheme fails a test instead of signing along with it.
        """
        stamp = int(self._wall()) if timestamp is None else timestamp
        key = (secret or self.webhook_secret).encode("utf-8")
        digest = hmac.new(key, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        return f"t={stamp},v1={digest}"

    def delivery(
        self, event: Mapping[str, Any], *, timestamp: int | None = None, secret: str | None = None
    ) -> StripeDelivery:
        """``event`` as Stripe posts it: pretty-printed JSON, signed."""
        body = json.dumps(event, indent=2).encode()
        headers = {
            "content-type": "application/json; charset=utf-8",
            "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "stripe-signature": self.sign(body, timestamp=timestamp, secret=secret),
        }
        return StripeDelivery(body, headers, dict(event))

    def drain(self, types: Sequence[str] | None = None) -> list[StripeDelivery]:
        """Signed deliveries of the queued events (only ``types`` when given), in the order
        Stripe created them; the queue is emptied."""
        events, self.outbox = self.outbox, []
        return [self.delivery(e) for e in events if types is None or e["type"] in types]
