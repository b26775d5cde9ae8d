"""A fake Polar for tests: an in-memory JSON API served as an httpx transport.

It behaves like Polar where the plugin can tell the difference:

- checks ``Authorization: Bearer <token>``; validates every request body against Polar's
  OpenAPI schema (``openapi-2026-10.json``, shipped with this package) and answers 422 with
  Polar's ``{"detail": [{"loc", "msg", "type"}]}`` when it does not validate — e.g. extra keys
  on ``PATCH /v1/subscriptions/{id}`` (each body shape forbids them) or a checkout without
  ``products``;
- keeps state: products and benefits, checkouts, customers (by id and by external id),
  subscriptions, orders, benefit grants, customer sessions, and ingested events deduplicated by
  ``external_id`` (answering ``{inserted, duplicates}``);
- answers objects of the real response shapes (``Checkout``, ``Subscription``,
  ``CustomerSession``, ``CustomerState`` …; the tests validate them against the schema);
- refuses what Polar refuses: a second cancel, or a plan change of a subscription canceled or
  set to end (403 ``AlreadyCanceledSubscription``), an uncancel with nothing pending (400);
- can be told to answer 429 with ``Retry-After``, a 5xx (also after carrying the call out),
  or any error for the next calls (:meth:`FakePolar.fail_next`, :meth:`FakePolar.error_next`);
- acts as the buyer and as Polar (:meth:`FakePolar.pay`, :meth:`FakePolar.cancel`,
  :meth:`FakePolar.renew`, :meth:`FakePolar.refund` …) and queues the deliveries Polar would
  send, as ``{"type", "timestamp", "data"}`` envelopes; :meth:`FakePolar.drain` signs them
  exactly as Polar signs (Standard Webhooks with the whole ``whsec_…`` string as the key;
  computed here, independently of the plugin's verifier), and
  :meth:`FakePolar.redeliver` sends one again as Polar retries: the same ``webhook-id`` and
  body, a new ``webhook-timestamp``.

Use::

    fake = FakePolar()
    product = fake.create_product(name="Pro", prices={"usd": 2900}, recurring_interval="month")
    async with make_api(plugins=[plugin], env=fake.env(), transports={"polar": fake.transport()}):
        ...
        fake.pay(fake.checkout_for(our_checkout_id)["id"])
        for delivery in fake.drain():
            await api.post_webhook("polar", delivery.body, delivery.headers)

Needs ``jsonschema`` (the ``billing-gql-polar[testing]`` extra).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from billing_gql_polar.api import SANDBOX_API_BASE

__all__ = [
    "SPEC_URI",
    "FakePolar",
    "PolarDelivery",
    "RecordedCall",
    "load_spec",
    "schema_errors",
]

SPEC_URI = "urn:polar-openapi-2026-10"
"""The base URI the shipped OpenAPI document is registered under for ``$ref`` resolution."""


@cache
def load_spec() -> dict[str, Any]:
    """Polar's OpenAPI document (2026-10), trimmed to what the plugin uses."""
    text = resources.files("billing_gql_polar").joinpath("openapi-2026-10.json").read_text("utf-8")
    spec: dict[str, Any] = json.loads(text)
    return spec


_FORMATS = FormatChecker(formats=())
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _is_uuid4(value: object) -> bool:
    return not isinstance(value, str) or uuid.UUID(value).version == 4


def _is_email(value: object) -> bool:
    return not isinstance(value, str) or bool(_EMAIL.match(value))


def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme in ("http", "https") and parts.netloc)


def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


# Formats Polar checks; a value a checker refuses is a 422, as at Polar.
_FORMATS.checks("uuid4", raises=ValueError)(_is_uuid4)
_FORMATS.checks("email")(_is_email)
_FORMATS.checks("uri")(_is_uri)
_FORMATS.checks("date-time", raises=ValueError)(_is_date_time)


@cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
    return registry


@cache
def _validator(component: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"{SPEC_URI}#/components/schemas/{component}"},
        registry=_registry(),
        format_checker=_FORMATS,
    )


def schema_errors(component: str, instance: object) -> list[ValidationError]:
    """Where ``instance`` breaks the schema ``#/components/schemas/{component}``."""
    return list(_validator(component).iter_errors(instance))


def _detail(error: ValidationError, root: str = "body") -> list[dict[str, Any]]:
    """A jsonschema error as Polar's (pydantic's) 422 ``detail`` entries.

    A body matching none of a union's shapes (``SubscriptionUpdate``) is described by the
    shapes it came closest to, as pydantic lists the errors of each union member.
    """
    if error.validator in ("anyOf", "oneOf") and error.context:
        by_member: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            by_member.setdefault(sub.relative_schema_path[0], []).append(sub)
        # An optional field (``X | None``) is reported for X only, as pydantic does.
        not_null = {
            member: errors
            for member, errors in by_member.items()
            if not all(e.validator == "type" and e.validator_value == "null" for e in errors)
        }
        by_member = not_null or by_member
        fewest = min(len(errors) for errors in by_member.values())
        entries: list[dict[str, Any]] = []
        for errors in by_member.values():
            if len(errors) == fewest:
                for sub in errors:
                    entries += [e for e in _detail(sub, root) if e not in entries]
        return entries
    loc: list[str | int] = [root, *error.absolute_path]
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = set(error.schema.get("properties", {}))
        return [
            {"loc": [*loc, key], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
            for key in instance
            if key not in allowed
        ]
    if error.validator == "required" and isinstance(instance, dict):
        return [
            {"loc": [*loc, key], "msg": "Field required", "type": "missing"}
            for key in error.validator_value
            if key not in instance
        ]
    return [{"loc": loc, "msg": error.message, "type": str(error.validator)}]


def _iso(moment: datetime) -> str:
    """A UTC time the way Polar's API writes it (``2025-06-01T10:00:00.123456Z``)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _add_interval(start: datetime, interval: str, count: int) -> datetime:
    """``start`` moved by ``count`` intervals (months keep the day, clamped at month end)."""
    if interval == "day":
        return start + timedelta(days=count)
    if interval == "week":
        return start + timedelta(weeks=count)
    months = count * (12 if interval == "year" else 1)
    year, month0 = divmod(start.month - 1 + months, 12)
    year += start.year
    day = start.day
    while True:
        try:
            return start.replace(year=year, month=month0 + 1, day=day)
        except ValueError:
            day -= 1


@dataclass(frozen=True)
class PolarDelivery:
    """One webhook delivery as Polar sends it: the raw body and its headers."""

    body: bytes
    headers: dict[str, str]
    payload: dict[str, Any]

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def type(self) -> str:
        return str(self.payload["type"])

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.payload["data"]
        return data


@dataclass(frozen=True)
class RecordedCall:
    """A request the fake answered (after authentication) and its answer."""

    method: str
    path: str
    url: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int
    response: Any
    response_headers: dict[str, str] = field(default_factory=dict)


class PolarApiError(Exception):
    """An error answer of the fake: a JSON body with an HTTP status."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


def _unprocessable(loc: list[str | int], msg: str, type_: str = "value_error") -> PolarApiError:
    return PolarApiError(422, {"detail": [{"loc": loc, "msg": msg, "type": type_}]})


def _not_found(what: str = "Not found") -> PolarApiError:
    return PolarApiError(404, {"error": "ResourceNotFound", "detail": what})


def _already_canceled() -> PolarApiError:
    return PolarApiError(
        403,
        {
            "error": "AlreadyCanceledSubscription",
            "detail": "This subscription is already canceled or will be at the end of the period.",
        },
    )


_BILLABLE = ("active", "trialing", "past_due")
"""Statuses Polar can still cancel, uncancel or change (its ``billable_statuses``)."""


def _can_cancel(sub: Mapping[str, Any], *, immediately: bool) -> bool:
    """Polar's ``Subscription.can_cancel``: a billable, not ended subscription; at the period
    end only when no end is scheduled yet (a second cancel is refused, not a no-op)."""
    if sub["status"] not in _BILLABLE or sub["ended_at"]:
        return False
    return immediately or not (sub["cancel_at_period_end"] or sub["ends_at"])


@dataclass
class _Fault:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    applied: bool = False


class FakePolar:
    """An in-memory Polar. Hand :meth:`transport` to the code under test."""

    def __init__(
        self,
        *,
        access_token: str = "polar_oat_fakeToken0123456789abcdefghij",  # noqa: S107 - a fake
        webhook_secret: str = "whsec_FakePolarSecretForTests0123456789abcde",  # noqa: S107
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.access_token = access_token
        self.webhook_secret = webhook_secret
        self._wall = clock
        self.offset = 0.0
        """Seconds added to the wall clock (move Polar's time with :meth:`advance`)."""
        self._last_event_at: datetime | None = None
        self.organization_id = str(uuid.uuid4())
        self.products: dict[str, dict[str, Any]] = {}
        self.meters: dict[str, dict[str, Any]] = {}
        self.benefits: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.checkouts: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.grants: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        """Ingested events by ``external_id``."""
        self.refunds: dict[str, dict[str, Any]] = {}
        self.settle_refunds = True
        """False: refunds made through the API stay ``pending`` until :meth:`settle_refund`."""
        self.calls: list[RecordedCall] = []
        self.outbox: list[dict[str, Any]] = []
        """Queued deliveries (``webhook_id`` and ``body``), not yet drained."""
        self.sent: list[PolarDelivery] = []
        self._faults: deque[_Fault] = deque()

    # -- wiring --------------------------------------------------------------------------------

    def env(self, api_base: str = SANDBOX_API_BASE) -> dict[str, str]:
        """``BILLING_GQL_POLAR_*`` settings pointing at this fake."""
        return {
            "BILLING_GQL_POLAR_ACCESS_TOKEN": self.access_token,
            "BILLING_GQL_POLAR_WEBHOOK_SECRET": self.webhook_secret,
            "BILLING_GQL_POLAR_API_BASE": api_base,
        }

    def transport(self) -> httpx.MockTransport:
        """An httpx transport answering as Polar's API (any host)."""
        return httpx.MockTransport(self.handle)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._wall() + self.offset, UTC)

    def advance(self, seconds: float) -> None:
        """Move Polar's clock forward (renewals, expiries)."""
        self.offset += seconds

    # -- faults --------------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 429,
        retry_after: str | None = "1",
        applied: bool = False,
    ) -> None:
        """Answer the next ``count`` calls with ``status`` (429 with ``Retry-After``, 5xx).

        ``applied``: Polar carries each call out before the failure replaces its answer (a
        gateway 502 after the change was made), so a retry meets the changed state.
        """
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        body = (
            {"error": "TooManyRequests", "detail": "Rate limit exceeded."}
            if status == 429
            else {"error": "InternalServerError", "detail": "Internal Server Error"}
        )
        for _ in range(count):
            self._faults.append(_Fault(status, body, headers, applied))

    def error_next(self, status: int, body: Mapping[str, Any]) -> None:
        """Answer the next call with ``status`` and ``body`` (e.g. a 403 or a 422)."""
        self._faults.append(_Fault(status, dict(body), {}))

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- catalog -------------------------------------------------------------------------------

    def create_benefit(
        self,
        *,
        description: str,
        metadata: Mapping[str, str | int | float | bool] | None = None,
        type: str = "feature_flag",
    ) -> str:
        """A benefit (``feature_flag`` or ``custom``) with ``metadata`` such as
        ``{"feature": "api_access", "limit": 1000}``."""
        now = _iso(self.now())
        benefit_id = str(uuid.uuid4())
        self.benefits[benefit_id] = {
            "id": benefit_id,
            "created_at": now,
            "modified_at": None,
            "type": type,
            "description": description,
            "selectable": True,
            "deletable": True,
            "is_deleted": False,
            "organization_id": self.organization_id,
            "metadata": dict(metadata or {}),
            "visibility": "public",
            "properties": {"note": None} if type == "custom" else {},
            "visibility_configurable": True,
        }
        return benefit_id

    def create_product(
        self,
        *,
        name: str,
        prices: Mapping[str, int],
        recurring_interval: str | None = "month",
        benefits: Iterable[str] = (),
        trial_days: int | None = None,
        metered: Iterable[tuple[str, str, str]] = (),
    ) -> str:
        """A product with one fixed price per currency (``{"usd": 2900}``); ``None`` interval
        for a one-time product. ``metered``: its metered prices, each ``(currency, meter id
        from`` :meth:`create_meter` ``, unit amount in cents as a decimal string)``."""
        now = _iso(self.now())
        product_id = str(uuid.uuid4())
        self.products[product_id] = {
            "id": product_id,
            "created_at": now,
            "modified_at": None,
            "trial_interval": "day" if trial_days else None,
            "trial_interval_count": trial_days or None,
            "name": name,
            "description": None,
            "visibility": "public",
            "recurring_interval": recurring_interval,
            "recurring_interval_count": 1 if recurring_interval else None,
            "meter_interval": None,
            "meter_interval_count": None,
            "is_recurring": recurring_interval is not None,
            "is_archived": False,
            "organization_id": self.organization_id,
            "metadata": {},
            "is_deletable": True,
            "prices": [
                {
                    "created_at": now,
                    "modified_at": None,
                    "id": str(uuid.uuid4()),
                    "source": "catalog",
                    "amount_type": "fixed",
                    "price_currency": currency.lower(),
                    "tax_behavior": None,
                    "is_archived": False,
                    "product_id": product_id,
                    "price_amount": amount,
                }
                for currency, amount in prices.items()
            ]
            + [
                self._metered_price(product_id, currency, meter_id, unit_amount, now)
                for currency, meter_id, unit_amount in metered
            ],
            "benefits": [self.benefits[b] for b in benefits],
            "medias": [],
            "attached_custom_fields": [],
        }
        return product_id

    def _price(self, product: Mapping[str, Any], currency: str) -> dict[str, Any] | None:
        for price in product["prices"]:
            if (
                price["price_currency"] == currency.lower()
                and not price["is_archived"]
                and price["amount_type"] != "metered_unit"
            ):
                return dict(price)
        return None

    def create_meter(self, *, name: str, event_name: str) -> str:
        """A meter counting the ingested events named ``event_name``; returns its id."""
        meter_id = str(uuid.uuid4())
        self.meters[meter_id] = {
            "metadata": {},
            "created_at": _iso(self.now()),
            "modified_at": None,
            "id": meter_id,
            "name": name,
            "unit": "scalar",
            "custom_label": None,
            "custom_multiplier": None,
            "filter": {
                "conjunction": "and",
                "clauses": [{"property": "name", "operator": "eq", "value": event_name}],
            },
            "aggregation": {"func": "count"},
            "organization_id": self.organization_id,
            "archived_at": None,
        }
        return meter_id

    def _metered_price(
        self, product_id: str, currency: str, meter_id: str, unit_amount: str, now: str
    ) -> dict[str, Any]:
        meter = self.meters[meter_id]
        return {
            "created_at": now,
            "modified_at": None,
            "id": str(uuid.uuid4()),
            "source": "catalog",
            "amount_type": "metered_unit",
            "price_currency": currency.lower(),
            "tax_behavior": None,
            "is_archived": False,
            "product_id": product_id,
            "unit_amount": unit_amount,
            "cap_amount": None,
            "meter_id": meter_id,
            "meter": {
                k: meter[k] for k in ("id", "name", "unit", "custom_label", "custom_multiplier")
            },
        }

    # -- the HTTP face -------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as Polar would."""
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            return httpx.Response(
                401, json={"error": "invalid_token", "detail": "Invalid or missing token."}
            )
        body = request.content
        parsed: Any = None
        headers: dict[str, str] = {}
        try:
            if body:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    raise _unprocessable(["body"], "JSON decode error", "json_invalid") from None
            if self._faults:
                fault = self._faults.popleft()
                if fault.applied:
                    with contextlib.suppress(PolarApiError):
                        self._route(request.method, request.url.path, parsed, request.url.params)
                status, answer, headers = fault.status, fault.body, fault.headers
            else:
                status, answer = self._route(
                    request.method, request.url.path, parsed, request.url.params
                )
        except PolarApiError as exc:
            status, answer = exc.status, exc.body
        self.calls.append(
            RecordedCall(
                method=request.method,
                path=request.url.path,
                url=str(request.url),
                headers=dict(request.headers),
                body=body,
                json=parsed,
                status=status,
                response=answer,
                response_headers=headers,
            )
        )
        headers = {**headers, "date": self.now().strftime("%a, %d %b %Y %H:%M:%S GMT")}
        return httpx.Response(status, json=answer, headers=headers)

    def requests_to(self, method: str, path: str) -> list[RecordedCall]:
        """The recorded calls with ``method`` whose path starts with ``path``."""
        return [c for c in self.calls if c.method == method and c.path.startswith(path)]

    def _validate(self, component: str, body: Any) -> None:
        errors = schema_errors(component, body)
        if errors:
            # pydantic reports every problem; the most relevant one first.
            best = best_match(errors)
            ordered = [best, *(e for e in errors if e is not best)] if best else errors
            detail: list[dict[str, Any]] = []
            for error in ordered:
                detail += [d for d in _detail(error) if d not in detail]
            raise PolarApiError(422, {"detail": detail})

    def _route(
        self, method: str, path: str, body: Any, query: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        match (method, parts):
            case ("POST", ["v1", "checkouts"]):
                return 201, self._create_checkout(body)
            case ("GET", ["v1", "checkouts", checkout_id]):
                return 200, self._checkout(checkout_id)
            case ("GET", ["v1", "products", product_id]):
                if product_id not in self.products:
                    raise _not_found("Product not found")
                return 200, copy.deepcopy(self.products[product_id])
            case ("GET", ["v1", "meters", meter_id]):
                if meter_id not in self.meters:
                    raise _not_found("Meter not found")
                return 200, copy.deepcopy(self.meters[meter_id])
            case ("GET", ["v1", "subscriptions", sub_id]):
                return 200, self._subscription_obj(self._subscription(sub_id))
            case ("PATCH", ["v1", "subscriptions", sub_id]):
                return 200, self._update_subscription(sub_id, body)
            case ("DELETE", ["v1", "subscriptions", sub_id]):
                sub = self._subscription(sub_id)
                if not _can_cancel(sub, immediately=True):
                    raise _already_canceled()
                self.revoke(sub_id)
                return 200, self._subscription_obj(sub)
            case ("POST", ["v1", "customer-sessions"]):
                return 201, self._create_session(body)
            case ("POST", ["v1", "refunds"]):
                return 201, self._create_refund(body)
            case ("GET", ["v1", "refunds"]):
                return 200, self._list_refunds(query or {})
            case ("POST", ["v1", "events", "ingest"]):
                return 200, self._ingest(body)
            case ("GET", ["v1", "customers", "external", external_id, "state"]):
                return 200, self._state(self._customer_by_external(external_id))
            case ("GET", ["v1", "customers", customer_id, "state"]):
                customer = self.customers.get(customer_id)
                if customer is None:
                    raise _not_found()
                return 200, self._state(customer)
        raise PolarApiError(404, {"detail": "Not Found"})

    # -- checkouts -----------------------------------------------------------------------------

    def _create_checkout(self, body: Any) -> dict[str, Any]:
        self._validate("CheckoutCreate", body)
        products = []
        for index, product_id in enumerate(body["products"]):
            product = self.products.get(product_id)
            if product is None or product["is_archived"]:
                raise _unprocessable(["body", "products", index], "Product does not exist.")
            products.append(product)
        if len(set(body["products"])) != len(body["products"]):
            raise _unprocessable(["body", "products"], "Products must be unique.")
        product = products[0]
        currency = body.get("currency") or product["prices"][0]["price_currency"]
        price = self._price(product, currency)
        if price is None:
            raise _unprocessable(["body", "currency"], f"No price in currency {currency}.")
        seats = body.get("seats")
        if seats is not None:
            raise _unprocessable(["body", "seats"], "Seats are only for seat-based pricing.")
        now = self.now()
        checkout_id = str(uuid.uuid4())
        client_secret = f"polar_c_{secrets.token_urlsafe(24)}"
        external_id = body.get("external_customer_id")
        customer = self._find_external(external_id) if external_id else None
        trial_interval = body.get("trial_interval") or product["trial_interval"]
        trial_count = body.get("trial_interval_count") or product["trial_interval_count"]
        allow_trial = body.get("allow_trial", True)
        if not allow_trial or not product["is_recurring"]:
            trial_interval = trial_count = None
        amount = price["price_amount"]
        public_benefits = [
            {k: b[k] for k in ("id", "created_at", "modified_at", "type", "description")}
            | {
                "selectable": b["selectable"],
                "deletable": b["deletable"],
                "is_deleted": b["is_deleted"],
                "organization_id": b["organization_id"],
            }
            for b in product["benefits"]
        ]
        checkout_products = [
            {k: v for k, v in p.items() if k not in ("metadata", "attached_custom_fields")}
            | {"benefits": public_benefits if p is product else []}
            for p in products
        ]
        checkout: dict[str, Any] = {
            "id": checkout_id,
            "created_at": _iso(now),
            "modified_at": None,
            "custom_field_data": {},
            "payment_processor": "stripe",
            "status": "open",
            "client_secret": client_secret,
            "url": f"https://sandbox.polar.sh/checkout/{client_secret}",
            "expires_at": _iso(now + timedelta(hours=1)),
            "success_url": body.get("success_url") or "https://sandbox.polar.sh/checkout/success",
            "return_url": body.get("return_url"),
            "embed_origin": body.get("embed_origin"),
            "amount": amount,
            "seats": None,
            "min_seats": None,
            "max_seats": None,
            "units": None,
            "min_units": None,
            "max_units": None,
            "discount_amount": 0,
            "net_amount": amount,
            "tax_amount": None,
            "tax_behavior": None,
            "total_amount": amount,
            "currency": currency.lower(),
            "allow_trial": allow_trial,
            "active_trial_interval": trial_interval,
            "active_trial_interval_count": trial_count,
            "trial_end": _iso(_add_interval(now, trial_interval, trial_count))
            if trial_interval and trial_count
            else None,
            "organization_id": self.organization_id,
            "product_id": product["id"],
            "product_price_id": price["id"],
            "discount_id": None,
            "allow_discount_codes": body.get("allow_discount_codes", True),
            "require_billing_address": body.get("require_billing_address", False),
            "is_discount_applicable": True,
            "is_free_product_price": amount == 0,
            "is_payment_required": amount > 0,
            "is_payment_setup_required": product["is_recurring"],
            "is_payment_form_required": True,
            "customer_id": customer["id"] if customer else None,
            "is_business_customer": False,
            "customer_name": body.get("customer_name"),
            "customer_email": body.get("customer_email"),
            "customer_ip_address": None,
            "customer_billing_name": None,
            "customer_billing_address": None,
            "customer_tax_id": None,
            "locale": body.get("locale"),
            "payment_method_type": None,
            "payment_processor_metadata": {},
            "billing_address_fields": {
                "country": "required",
                "state": "disabled",
                "city": "disabled",
                "postal_code": "disabled",
                "line1": "disabled",
                "line2": "disabled",
            },
            "trial_interval": body.get("trial_interval"),
            "trial_interval_count": body.get("trial_interval_count"),
            "metadata": dict(body.get("metadata") or {}),
            "external_customer_id": external_id,
            "products": checkout_products,
            "product": checkout_products[0],
            "product_price": price,
            "prices": {p["id"]: p["prices"] for p in products},
            "discount": None,
            "subscription_id": body.get("subscription_id"),
            "attached_custom_fields": [],
            "customer_metadata": dict(body.get("customer_metadata") or {}),
        }
        self.checkouts[checkout_id] = checkout
        self._queue("checkout.created", checkout)
        return copy.deepcopy(checkout)

    def _checkout(self, checkout_id: str) -> dict[str, Any]:
        checkout = self.checkouts.get(checkout_id)
        if checkout is None:
            raise _not_found()
        return copy.deepcopy(checkout)

    def checkout_for(self, our_checkout_id: str) -> dict[str, Any]:
        """The Polar checkout created for billing-gql's checkout ``our_checkout_id``."""
        for checkout in self.checkouts.values():
            if checkout["metadata"].get("billing_gql_checkout_id") == our_checkout_id:
                return checkout
        raise KeyError(our_checkout_id)

    def _touch(self, obj: dict[str, Any]) -> None:
        obj["modified_at"] = _iso(self.now())

    def expire_checkout(self, checkout_id: str) -> None:
        """The buyer never paid: Polar expires the checkout."""
        checkout = self.checkouts[checkout_id]
        checkout["status"] = "expired"
        self._touch(checkout)
        self._queue("checkout.updated", checkout)
        self._queue("checkout.expired", checkout)

    # -- the buyer pays ------------------------------------------------------------------------

    def pay(self, checkout_id: str, *, email: str | None = None) -> dict[str, Any]:
        """The buyer pays checkout ``checkout_id``: Polar creates the customer (from the
        checkout's ``external_customer_id``), the subscription (recurring products) and the
        paid order, grants the product's benefits, and queues the deliveries it sends.

        :returns: the paid order.
        """
        checkout = self.checkouts[checkout_id]
        if checkout["status"] != "open":
            raise ValueError(f"checkout {checkout_id} is {checkout['status']}")
        checkout["status"] = "confirmed"
        self._touch(checkout)
        self._queue("checkout.updated", checkout)
        customer = self._customer_for(checkout, email)
        checkout["customer_id"] = customer["id"]
        product = self.products[checkout["product_id"]]
        now = self.now()
        sub: dict[str, Any] | None = None
        if product["is_recurring"]:
            sub = self._new_subscription(checkout, customer, product, now)
            self._queue("subscription.created", self._subscription_obj(sub))
        trialing = sub is not None and sub["status"] == "trialing"
        order = self._new_order(
            customer,
            product,
            checkout["currency"],
            0 if trialing else checkout["amount"],
            reason="subscription_create" if sub else "purchase",
            sub=sub,
            checkout=checkout,
        )
        if sub is not None and not trialing:
            self._queue("subscription.active", self._subscription_obj(sub))
        for benefit in product["benefits"]:
            self._grant(benefit, customer, sub=sub, order=order)
        checkout["status"] = "succeeded"
        checkout["subscription_id"] = sub["id"] if sub else None
        self._touch(checkout)
        self._queue("checkout.updated", checkout)
        self._queue("customer.state_changed", self._state(customer))
        return order

    def _find_external(self, external_id: str) -> dict[str, Any] | None:
        for customer in self.customers.values():
            if customer["external_id"] == external_id:
                return customer
        return None

    def _customer_by_external(self, external_id: str) -> dict[str, Any]:
        customer = self._find_external(external_id)
        if customer is None:
            raise _not_found()
        return customer

    def _customer_for(self, checkout: Mapping[str, Any], email: str | None) -> dict[str, Any]:
        external_id = checkout.get("external_customer_id")
        found = self._find_external(external_id) if external_id else None
        if found is None and checkout.get("customer_id"):
            found = self.customers.get(checkout["customer_id"])
        if found is not None:
            return found
        customer_id = str(uuid.uuid4())
        customer = {
            "id": customer_id,
            "created_at": _iso(self.now()),
            "modified_at": None,
            "metadata": dict(checkout.get("customer_metadata") or {}),
            "external_id": external_id,
            "email": checkout.get("customer_email") or email or f"{customer_id[:8]}@buyer.test",
            "email_verified": False,
            "type": "individual",
            "name": checkout.get("customer_name"),
            "billing_name": None,
            "billing_address": None,
            "tax_id": None,
            "locale": None,
            "organization_id": self.organization_id,
            "default_payment_method_id": None,
            "deleted_at": None,
            "first_user_event_at": None,
            "avatar_url": None,
        }
        self.customers[customer_id] = customer
        self._queue("customer.created", customer)
        return customer

    def create_customer(self, *, external_id: str, email: str) -> str:
        """A customer created in Polar's dashboard (or by an earlier checkout)."""
        checkout = {"external_customer_id": external_id, "customer_email": email}
        return str(self._customer_for(checkout, None)["id"])

    def _new_subscription(
        self,
        checkout: Mapping[str, Any],
        customer: Mapping[str, Any],
        product: Mapping[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        trial_interval = checkout.get("active_trial_interval")
        trial_count = checkout.get("active_trial_interval_count")
        trial_end = (
            _add_interval(now, trial_interval, trial_count)
            if trial_interval and trial_count
            else None
        )
        period_end = trial_end or _add_interval(now, product["recurring_interval"], 1)
        sub_id = str(uuid.uuid4())
        sub: dict[str, Any] = {
            "created_at": _iso(now),
            "modified_at": None,
            "id": sub_id,
            "amount": checkout["amount"],
            "currency": checkout["currency"],
            "recurring_interval": product["recurring_interval"],
            "recurring_interval_count": product["recurring_interval_count"],
            "status": "trialing" if trial_end else "active",
            "current_period_start": _iso(now),
            "current_period_end": _iso(period_end),
            "current_meter_period_start": None,
            "current_meter_period_end": None,
            "trial_start": _iso(now) if trial_end else None,
            "trial_end": _iso(trial_end) if trial_end else None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "started_at": _iso(now),
            "ends_at": None,
            "ended_at": None,
            "past_due_at": None,
            "pause_at_period_end": False,
            "paused_at": None,
            "resumes_at": None,
            "customer_id": customer["id"],
            "product_id": product["id"],
            "discount_id": None,
            "checkout_id": checkout["id"],
            "seats": None,
            "units": None,
            "customer_cancellation_reason": None,
            "customer_cancellation_comment": None,
            "metadata": dict(checkout["metadata"]),
            "custom_field_data": {},
            "discount": None,
            "meters": [],
            "pending_update": None,
        }
        self.subscriptions[sub_id] = sub
        return sub

    def _subscription(self, sub_id: str) -> dict[str, Any]:
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise _not_found()
        return sub

    def _subscription_obj(self, sub: Mapping[str, Any]) -> dict[str, Any]:
        """The ``Subscription`` object (with customer, product and prices embedded)."""
        product = self.products[sub["product_id"]]
        obj = copy.deepcopy(dict(sub))
        obj["customer"] = copy.deepcopy(self.customers[sub["customer_id"]])
        obj["product"] = copy.deepcopy(product)
        obj["prices"] = [p for p in copy.deepcopy(product["prices"]) if not p["is_archived"]]
        return obj

    def subscription_for(self, our_checkout_id: str) -> dict[str, Any]:
        """The Polar subscription that billing-gql's checkout ``our_checkout_id`` created."""
        checkout = self.checkout_for(our_checkout_id)
        return self.subscriptions[checkout["subscription_id"]]

    def _new_order(
        self,
        customer: Mapping[str, Any],
        product: Mapping[str, Any],
        currency: str,
        amount: int,
        *,
        reason: str,
        sub: Mapping[str, Any] | None,
        checkout: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        now = _iso(self.now())
        order_id = str(uuid.uuid4())
        metadata = dict((checkout or sub or {}).get("metadata") or {})
        order_sub = None
        if sub is not None:
            order_sub = {
                k: copy.deepcopy(v)
                for k, v in sub.items()
                if k
                not in ("customer", "product", "prices", "meters", "pending_update", "discount")
            }
        order: dict[str, Any] = {
            "id": order_id,
            "created_at": now,
            "modified_at": None,
            "status": "pending",
            "paid": False,
            "subtotal_amount": amount,
            "discount_amount": 0,
            "net_amount": amount,
            "tax_amount": 0,
            "total_amount": amount,
            "applied_balance_amount": 0,
            "due_amount": amount,
            "refunded_amount": 0,
            "refunded_tax_amount": 0,
            "currency": currency,
            "billing_reason": reason,
            "billing_name": None,
            "billing_address": None,
            "invoice_number": f"POLAR-{len(self.orders) + 1:04d}",
            "is_invoice_generated": False,
            "receipt_number": None,
            "seats": None,
            "customer_id": customer["id"],
            "product_id": product["id"],
            "discount_id": None,
            "subscription_id": sub["id"] if sub else None,
            "checkout_id": checkout["id"] if checkout else None,
            "metadata": metadata,
            "custom_field_data": {},
            "platform_fee_amount": 0,
            "platform_fee_currency": None,
            "customer": copy.deepcopy(dict(customer)),
            "product": {
                k: copy.deepcopy(v)
                for k, v in product.items()
                if k not in ("prices", "benefits", "medias", "attached_custom_fields")
            },
            "discount": None,
            "subscription": order_sub,
            "items": [
                {
                    "created_at": now,
                    "modified_at": None,
                    "id": str(uuid.uuid4()),
                    "label": str(product["name"]),
                    "amount": amount,
                    "tax_amount": 0,
                    "proration": reason == "subscription_update",
                    "product_price_id": product["prices"][0]["id"],
                }
            ],
            "description": str(product["name"]),
            "refundable_amount": amount,
            "refundable_tax_amount": 0,
            "next_payment_attempt_at": None,
        }
        self.orders[order_id] = order
        self._queue("order.created", order)
        order["status"] = "paid"
        order["paid"] = True
        order["due_amount"] = 0
        self._touch(order)
        self._queue("order.updated", order)
        self._queue("order.paid", order)
        return order

    def _grant(
        self,
        benefit: Mapping[str, Any],
        customer: Mapping[str, Any],
        *,
        sub: Mapping[str, Any] | None,
        order: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        now = _iso(self.now())
        grant_id = str(uuid.uuid4())
        grant: dict[str, Any] = {
            "created_at": now,
            "modified_at": None,
            "id": grant_id,
            "granted_at": now,
            "is_granted": True,
            "revoked_at": None,
            "is_revoked": False,
            "subscription_id": sub["id"] if sub else None,
            "order_id": order["id"] if order else None,
            "customer_id": customer["id"],
            "member_id": None,
            "benefit_id": benefit["id"],
            "error": None,
            "properties": {},
        }
        self.grants[grant_id] = grant
        self._queue("benefit_grant.created", self._grant_obj(grant))
        return grant

    def _grant_obj(self, grant: Mapping[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(dict(grant))
        obj["customer"] = copy.deepcopy(self.customers[grant["customer_id"]])
        obj["member"] = None
        obj["benefit"] = copy.deepcopy(self.benefits[grant["benefit_id"]])
        obj["previous_properties"] = None
        return obj

    def revoke_grant(self, grant_id: str) -> None:
        """Polar takes a benefit back (``benefit_grant.revoked``)."""
        grant = self.grants[grant_id]
        now = _iso(self.now())
        grant.update(is_granted=False, is_revoked=True, revoked_at=now, modified_at=now)
        self._queue("benefit_grant.revoked", self._grant_obj(grant))

    def update_grant(self, grant_id: str, **changes: Any) -> None:
        """A grant changes (``benefit_grant.updated``), e.g. ``properties``."""
        grant = self.grants[grant_id]
        grant.update(changes)
        self._touch(grant)
        self._queue("benefit_grant.updated", self._grant_obj(grant))

    def grants_of(self, sub_id: str) -> list[dict[str, Any]]:
        return [g for g in self.grants.values() if g["subscription_id"] == sub_id]

    # -- subscription changes (API or dashboard) -----------------------------------------------

    def _update_subscription(self, sub_id: str, body: Any) -> dict[str, Any]:
        sub = self._subscription(sub_id)
        self._validate("SubscriptionUpdate", body)
        if "cancel_at_period_end" in body:
            if body["cancel_at_period_end"]:
                if not _can_cancel(sub, immediately=False):
                    raise _already_canceled()
                self.cancel(sub_id, at_period_end=True)
            else:
                # Polar: an ended subscription is gone (410); one with no pending cancel
                # has nothing to undo (400).
                if sub["ended_at"]:
                    raise PolarApiError(
                        410, {"error": "ResourceUnavailable", "detail": "Unavailable"}
                    )
                if sub["status"] not in _BILLABLE or not sub["cancel_at_period_end"]:
                    raise PolarApiError(400, {"error": "BadRequest", "detail": "Bad request"})
                self.uncancel(sub_id)
        elif "revoke" in body:
            if not _can_cancel(sub, immediately=True):
                raise _already_canceled()
            self.revoke(sub_id)
        elif "resume" in body:
            if sub["status"] != "paused":
                raise PolarApiError(
                    403,
                    {"error": "InactiveSubscription", "detail": "The subscription is not paused."},
                )
            self.resume(sub_id)
        elif "pause_at_period_end" in body:
            sub["pause_at_period_end"] = body["pause_at_period_end"]
            self._changed(sub, "subscription.updated")
        elif "seats" in body:
            raise _unprocessable(["body", "seats"], "This subscription is not seat-based.")
        elif "pending_update" in body:
            sub["pending_update"] = None
            self._changed(sub, "subscription.updated")
        elif "current_billing_period_end" in body:
            sub["current_period_end"] = body["current_billing_period_end"]
            self._changed(sub, "subscription.updated")
        else:
            if body.get("product_id"):
                self.change_product(
                    sub_id, body["product_id"], body.get("proration_behavior") or "prorate"
                )
            if body.get("metadata") is not None:
                sub["metadata"] = dict(body["metadata"])
                self._changed(sub, "subscription.updated")
        return self._subscription_obj(sub)

    def _changed(self, sub: dict[str, Any], *types: str) -> None:
        self._touch(sub)
        obj = self._subscription_obj(sub)
        for event_type in types:
            self._queue(event_type, obj)

    def cancel(self, sub_id: str, *, at_period_end: bool = True) -> None:
        """The customer (or the merchant's dashboard) cancels: at the period end, or now."""
        if not at_period_end:
            self.revoke(sub_id)
            return
        sub = self.subscriptions[sub_id]
        sub.update(
            cancel_at_period_end=True,
            canceled_at=_iso(self.now()),
            ends_at=sub["current_period_end"],
        )
        self._changed(sub, "subscription.updated", "subscription.canceled")

    def uncancel(self, sub_id: str) -> None:
        """A pending cancel is undone."""
        sub = self.subscriptions[sub_id]
        sub.update(cancel_at_period_end=False, canceled_at=None, ends_at=None)
        self._changed(sub, "subscription.updated", "subscription.uncanceled")

    def revoke(self, sub_id: str, *, status: str = "canceled") -> None:
        """Access ends now (``DELETE``, a revoke, or ``unpaid`` after failed retries)."""
        sub = self.subscriptions[sub_id]
        now = _iso(self.now())
        sub.update(
            status=status,
            cancel_at_period_end=False,
            canceled_at=sub["canceled_at"] or now,
            ends_at=now,
            ended_at=now,
        )
        self._changed(sub, "subscription.updated", "subscription.canceled", "subscription.revoked")
        for grant in self.grants_of(sub_id):
            if grant["is_granted"]:
                self.revoke_grant(grant["id"])
        self._queue("customer.state_changed", self._state(self.customers[sub["customer_id"]]))

    def past_due(self, sub_id: str) -> None:
        """A renewal payment failed; Polar retries it."""
        sub = self.subscriptions[sub_id]
        sub.update(status="past_due", past_due_at=_iso(self.now()))
        self._changed(sub, "subscription.updated", "subscription.past_due")

    def pause(self, sub_id: str) -> None:
        sub = self.subscriptions[sub_id]
        sub.update(status="paused", paused_at=_iso(self.now()), pause_at_period_end=False)
        self._changed(sub, "subscription.updated", "subscription.paused")

    def resume(self, sub_id: str) -> None:
        sub = self.subscriptions[sub_id]
        sub.update(status="active", paused_at=None, resumes_at=None)
        self._changed(sub, "subscription.updated", "subscription.resumed")

    def renew(self, sub_id: str) -> dict[str, Any]:
        """A new period starts and Polar charges it (``subscription.cycled`` first, then the
        ``subscription_cycle`` order). Returns the order."""
        sub = self.subscriptions[sub_id]
        self._queue("subscription.cycled", self._subscription_obj(sub))
        start = datetime.fromisoformat(sub["current_period_end"])
        product_id = sub["product_id"]
        pending = sub["pending_update"]
        if pending and pending.get("product_id"):
            product_id = pending["product_id"]
        product = self.products[product_id]
        price = self._price(product, sub["currency"])
        amount = price["price_amount"] if price else sub["amount"]
        sub.update(
            status="active",
            product_id=product_id,
            amount=amount,
            pending_update=None,
            trial_start=None,
            current_period_start=_iso(start),
            current_period_end=_iso(_add_interval(start, sub["recurring_interval"], 1)),
        )
        customer = self.customers[sub["customer_id"]]
        order = self._new_order(
            customer,
            product,
            sub["currency"],
            amount,
            reason="subscription_cycle",
            sub=sub,
            checkout=None,
        )
        self._changed(sub, "subscription.updated")
        for grant in self.grants_of(sub_id):
            if grant["is_granted"]:
                self._touch(grant)
                self._queue("benefit_grant.cycled", self._grant_obj(grant))
        return order

    def change_product(self, sub_id: str, product_id: str, proration_behavior: str) -> None:
        """Move the subscription to another product (``next_period``: at the period end)."""
        sub = self.subscriptions[sub_id]
        if sub["status"] in ("canceled", "unpaid") or sub["cancel_at_period_end"]:
            raise _already_canceled()  # Polar checks this before anything else
        product = self.products.get(product_id)
        if product is None or not product["is_recurring"]:
            raise _unprocessable(["body", "product_id"], "Product does not exist.")
        if sub["status"] not in _BILLABLE:
            raise PolarApiError(
                403, {"error": "InactiveSubscription", "detail": "The subscription is not active."}
            )
        price = self._price(product, sub["currency"])
        if price is None:
            raise _unprocessable(
                ["body", "product_id"], f"The product has no price in {sub['currency']}."
            )
        if proration_behavior == "next_period":
            now = _iso(self.now())
            sub["pending_update"] = {
                "created_at": now,
                "modified_at": None,
                "id": str(uuid.uuid4()),
                "applies_at": sub["current_period_end"],
                "product_id": product_id,
                "seats": None,
                "units": None,
            }
            self._changed(sub, "subscription.updated")
            return
        old_amount = sub["amount"]
        sub.update(product_id=product_id, amount=price["price_amount"], pending_update=None)
        self._changed(sub, "subscription.updated")
        if proration_behavior == "invoice" and price["price_amount"] > old_amount:
            customer = self.customers[sub["customer_id"]]
            self._new_order(
                customer,
                product,
                sub["currency"],
                price["price_amount"] - old_amount,
                reason="subscription_update",
                sub=sub,
                checkout=None,
            )

    def _new_refund(
        self,
        order: dict[str, Any],
        amount: int,
        *,
        reason: str = "customer_request",
        metadata: Mapping[str, Any] | None = None,
        settled: bool = True,
    ) -> dict[str, Any]:
        """A refund of ``order`` (checked by the caller): ``refund.created``, and once
        ``settled`` the order's refunded amounts, ``order.updated`` and ``order.refunded``."""
        refund: dict[str, Any] = {
            "created_at": _iso(self.now()),
            "modified_at": None,
            "id": str(uuid.uuid4()),
            "metadata": dict(metadata or {}),
            "status": "succeeded" if settled else "pending",
            "reason": reason,
            "amount": amount,
            "tax_amount": 0,
            "currency": order["currency"],
            "organization_id": self.organization_id,
            "order_id": order["id"],
            "subscription_id": order["subscription_id"],
            "customer_id": order["customer_id"],
            "revoke_benefits": False,
            "dispute": None,
        }
        self.refunds[refund["id"]] = refund
        order["refundable_amount"] -= amount  # held while pending, as Polar does
        self._queue("refund.created", refund)
        if settled:
            self._refunded(order, amount)
        return refund

    def _refunded(self, order: dict[str, Any], amount: int) -> None:
        order["refunded_amount"] += amount
        order["status"] = (
            "refunded"
            if order["refunded_amount"] >= order["total_amount"]
            else "partially_refunded"
        )
        self._touch(order)
        self._queue("order.updated", order)
        self._queue("order.refunded", order)

    def settle_refund(self, refund_id: str, *, succeeded: bool = True) -> None:
        """A pending refund succeeds (or fails, giving its amount back): ``refund.updated``."""
        refund = self.refunds[refund_id]
        order = self.orders[refund["order_id"]]
        refund["status"] = "succeeded" if succeeded else "failed"
        self._touch(refund)
        self._queue("refund.updated", refund)
        if succeeded:
            self._refunded(order, refund["amount"])
        else:
            order["refundable_amount"] += refund["amount"]

    def refund(
        self, order_id: str, amount: int | None = None, *, metadata: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Refund ``amount`` (default: all that is left) of a paid order from the dashboard
        (or, with ``metadata``, as an API call whose answer was lost); the refund."""
        order = self.orders[order_id]
        left = order["refundable_amount"]
        return self._new_refund(
            order, left if amount is None else min(amount, left), metadata=metadata
        )

    def _create_refund(self, body: Any) -> dict[str, Any]:
        """``POST /v1/refunds/``: at most the order's refundable amount (pending refunds hold
        theirs); a fully refunded order is refused with ``RefundedAlready``."""
        self._validate("RefundCreate", body)
        order = self.orders.get(body["order_id"])
        if order is None:
            raise _not_found("Order not found")
        if order["status"] == "refunded" or order["refundable_amount"] <= 0:
            raise PolarApiError(
                403, {"error": "RefundedAlready", "detail": "Order is already fully refunded."}
            )
        if order["status"] not in ("paid", "partially_refunded"):
            raise _unprocessable(["body", "order_id"], "Order is not paid.")
        if body["amount"] > order["refundable_amount"]:
            raise _unprocessable(
                ["body", "amount"],
                f"Refund amount exceeds remaining order balance: {order['refundable_amount']}",
            )
        refund = self._new_refund(
            order,
            body["amount"],
            reason=body["reason"],
            metadata=body.get("metadata"),
            settled=self.settle_refunds,
        )
        return copy.deepcopy(refund)

    def _list_refunds(self, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /v1/refunds/`` (filter ``order_id``), newest first."""
        found = [r for r in reversed(self.refunds.values())]
        if "order_id" in query:
            found = [r for r in found if r["order_id"] == query["order_id"]]
        return {
            "items": copy.deepcopy(found),
            "pagination": {"total_count": len(found), "max_page": 1},
        }

    # -- customer sessions, events, state ------------------------------------------------------

    def _create_session(self, body: Any) -> dict[str, Any]:
        by_external = isinstance(body, dict) and "external_customer_id" in body
        self._validate(
            "CustomerSessionCustomerExternalIDCreate"
            if by_external
            else "CustomerSessionCustomerIDCreate",
            body,
        )
        if by_external:
            customer = self._find_external(body["external_customer_id"])
            field_name = "external_customer_id"
        else:
            customer = self.customers.get(body["customer_id"])
            field_name = "customer_id"
        if customer is None:
            raise _unprocessable(["body", field_name], "Customer does not exist.")
        now = self.now()
        token = f"polar_cst_{secrets.token_urlsafe(24)}"
        session = {
            "created_at": _iso(now),
            "modified_at": None,
            "id": str(uuid.uuid4()),
            "token": token,
            "expires_at": _iso(now + timedelta(hours=1)),
            "return_url": body.get("return_url"),
            "customer_portal_url": f"https://sandbox.polar.sh/acme/portal?customer_session_token={token}",
            "customer_id": customer["id"],
            "customer": copy.deepcopy(customer),
        }
        self.sessions[session["id"]] = session
        return copy.deepcopy(session)

    def _ingest(self, body: Any) -> dict[str, Any]:
        self._validate("EventsIngest", body)
        now = self.now()
        for index, event in enumerate(body["events"]):
            stamp = event.get("timestamp")
            if stamp is not None and datetime.fromisoformat(stamp) > now + timedelta(seconds=5):
                raise _unprocessable(
                    ["body", "events", index, "timestamp"], "Timestamp must be in the past."
                )
        inserted = duplicates = 0
        for event in body["events"]:
            key = event.get("external_id") or str(uuid.uuid4())
            if key in self.events:
                duplicates += 1
                continue
            self.events[key] = {**event, "ingested_at": _iso(now)}
            inserted += 1
        return {"inserted": inserted, "duplicates": duplicates}

    def _state(self, customer: Mapping[str, Any]) -> dict[str, Any]:
        live = ("active", "trialing")  # the schema lists only these as active
        subs = [
            s
            for s in self.subscriptions.values()
            if s["customer_id"] == customer["id"] and s["status"] in live
        ]
        grants = [
            g
            for g in self.grants.values()
            if g["customer_id"] == customer["id"] and g["is_granted"]
        ]
        return copy.deepcopy(
            {
                **customer,
                "active_subscriptions": [
                    {
                        k: s[k]
                        for k in (
                            "id",
                            "created_at",
                            "modified_at",
                            "metadata",
                            "status",
                            "amount",
                            "currency",
                            "recurring_interval",
                            "current_period_start",
                            "current_period_end",
                            "trial_start",
                            "trial_end",
                            "cancel_at_period_end",
                            "canceled_at",
                            "started_at",
                            "ends_at",
                            "product_id",
                            "discount_id",
                            "seats",
                            "units",
                            "meters",
                            "custom_field_data",
                        )
                    }
                    for s in subs
                ],
                "granted_benefits": [
                    {
                        "id": g["id"],
                        "created_at": g["created_at"],
                        "modified_at": g["modified_at"],
                        "granted_at": g["granted_at"],
                        "benefit_id": g["benefit_id"],
                        "benefit_type": self.benefits[g["benefit_id"]]["type"],
                        "benefit_metadata": self.benefits[g["benefit_id"]]["metadata"],
                        "properties": g["properties"],
                    }
                    for g in grants
                ],
                "active_meters": [],
            }
        )

    # -- webhook deliveries --------------------------------------------------------------------

    def _event_time(self) -> datetime:
        # Polar stamps each event when it creates it; strictly increasing here, so that two
        # events of one change still have an order.
        now = self.now()
        if self._last_event_at is not None and now <= self._last_event_at:
            now = self._last_event_at + timedelta(microseconds=1)
        self._last_event_at = now
        return now

    def emit(self, event_type: str, data: Mapping[str, Any]) -> None:
        """Queue any delivery (a type the plugin may not know, e.g. ``customer.updated``)."""
        self._queue(event_type, data)

    def _queue(self, event_type: str, data: Mapping[str, Any]) -> None:
        payload = {"type": event_type, "timestamp": _iso(self._event_time()), "data": data}
        # Polar stores the payload when the event is created; every attempt sends these bytes.
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.outbox.append({"webhook_id": str(uuid.uuid4()), "body": body})

    def sign_headers(
        self,
        body: bytes,
        webhook_id: str,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> dict[str, str]:
        """The headers Polar sends with ``body``, signed now (or at ``timestamp``).

        Signed here as Polar's server signs (Standard Webhooks, keyed by the whole
        ``whsec_…`` string's bytes: Polar hands the library ``base64(secret)``, which it
        decodes back), not with the plugin's code, so that the plugin's verifier is checked
        against the scheme rather than against itself.
        """
        stamp = int(self.now().timestamp()) if timestamp is None else timestamp
        key = (secret or self.webhook_secret).encode("utf-8")
        digest = hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256)
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": "v1," + base64.b64encode(digest.digest()).decode("ascii"),
            "content-type": "application/json",
            "user-agent": "polar.sh webhooks",
        }

    def drain(self) -> list[PolarDelivery]:
        """Every queued delivery, in Polar's order, each signed now; the queue empties."""
        out = [
            PolarDelivery(
                body=item["body"],
                headers=self.sign_headers(item["body"], item["webhook_id"]),
                payload=json.loads(item["body"]),
            )
            for item in self.outbox
        ]
        self.outbox.clear()
        self.sent.extend(out)
        return out

    def redeliver(self, delivery: PolarDelivery, *, timestamp: int | None = None) -> PolarDelivery:
        """``delivery`` again, as Polar retries it: same ``webhook-id`` and body, a new
        ``webhook-timestamp`` and signature."""
        return PolarDelivery(
            body=delivery.body,
            headers=self.sign_headers(delivery.body, delivery.webhook_id, timestamp=timestamp),
            payload=delivery.payload,
        )
