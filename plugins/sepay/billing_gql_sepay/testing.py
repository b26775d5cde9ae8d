"""A fake SePay for tests: a bank account's ledger, its webhook deliveries and its user API.

- :meth:`FakeSePay.transfer` records a transfer on the ledger the way SePay sees it (numeric
  ``id``, the bank's ``referenceCode``, ``transactionDate`` in Vietnam time, a running
  ``accumulated`` balance, ``code`` extracted from the memo as SePay's payment-code structure
  does — or null);
- :meth:`FakeSePay.delivery` builds the webhook POST SePay makes for it (``Authorization:
  Apikey …``); building it again gives the identical delivery, as SePay's retries are;
- :meth:`FakeSePay.transport` serves ``GET /v2/transactions`` (Bearer token, paging with
  ``page``/``per_page``, ``transaction_date_from``, ``transfer_type``, sorting) as an httpx
  transport, answers 429 with ``Retry-After`` on demand (:meth:`FakeSePay.rate_limit`) and can
  speak the legacy v1 shape (``api_shape = "v1"``); it also serves the v1 transaction details
  ``GET /userapi/transactions/details/{id}`` (``{status, error, messages, transaction}``; an
  unknown id answers 404), and answers 503 on demand (:meth:`FakeSePay.outage`);
  :meth:`FakeSePay.serve` serves the same API
  over real HTTP on 127.0.0.1 (for a ``billing-gql`` process, e.g. ``billing-gql reconcile``).

Usage::

    fake = FakeSePay()
    async with make_api(plugins=[billing_gql_sepay.plugin], env=fake.env(),
                        transports={"sepay": fake.transport()}) as api:
        txn = fake.transfer(199000, f"{reference} thanh toan")
        delivery = fake.delivery(txn)
        await api.post_webhook("sepay", delivery.body, dict(delivery.headers))
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

__all__ = ["AUTO", "FakeSePay", "Transaction", "WebhookDelivery"]

# SePay writes and reads dates as "YYYY-MM-DD HH:MM:SS" in Vietnam time (UTC+7, no offset).
# The fake keeps its own conversion, not the plugin's, so that a plugin reading these dates
# in the wrong zone disagrees with the fake instead of agreeing with itself.
_VIETNAM = timezone(timedelta(hours=7))
_SEPAY_DATE = "%Y-%m-%d %H:%M:%S"
_DETAILS = re.compile(r"/userapi/transactions/details/(\d+)")


def _sepay_date(moment: datetime) -> str:
    return moment.astimezone(_VIETNAM).strftime(_SEPAY_DATE)


def _read_sepay_date(text: str) -> datetime:
    """A SePay date parameter as UTC; ``ValueError`` when it is not SePay's format."""
    return datetime.strptime(text, _SEPAY_DATE).replace(tzinfo=_VIETNAM).astimezone(UTC)


class _Auto:
    def __repr__(self) -> str:
        return "AUTO"


AUTO: Any = _Auto()
"""Default of :meth:`FakeSePay.transfer`'s ``code``: extract it from the memo like SePay."""


@dataclass(frozen=True)
class WebhookDelivery:
    """A webhook POST: the raw body and its headers, as SePay sends them."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Transaction:
    """One entry of the fake bank account's ledger."""

    id: int
    """SePay's numeric transaction id (webhooks, API v1)."""
    uuid: str
    """Its API v2 id."""
    gateway: str
    at: datetime
    account_number: str
    sub_account: str | None
    code: str | None
    content: str
    transfer_type: str
    amount: int
    accumulated: int
    reference_code: str | None
    description: str

    def webhook_payload(self) -> dict[str, Any]:
        """The webhook body, field for field as SePay sends it."""
        return {
            "id": self.id,
            "gateway": self.gateway,
            "transactionDate": _sepay_date(self.at),
            "accountNumber": self.account_number,
            "subAccount": self.sub_account,
            "code": self.code,
            "content": self.content,
            "transferType": self.transfer_type,
            "transferAmount": self.amount,
            "accumulated": self.accumulated,
            "referenceCode": self.reference_code,
            "description": self.description,
        }

    def api_v2(self, delivered: bool) -> dict[str, Any]:
        incoming = self.transfer_type == "in"
        return {
            "id": self.uuid,
            "bank_brand_name": self.gateway,
            "account_number": self.account_number,
            "sub_account": self.sub_account,
            "transaction_date": _sepay_date(self.at),
            "transfer_type": self.transfer_type,
            "amount_in": self.amount if incoming else 0,
            "amount_out": 0 if incoming else self.amount,
            "accumulated": self.accumulated,
            "transaction_content": self.content,
            "reference_number": self.reference_code,
            "code": self.code,
            "webhook_success": 1 if delivered else 0,
        }

    def api_v1(self) -> dict[str, Any]:
        incoming = self.transfer_type == "in"
        return {
            "id": str(self.id),
            "bank_brand_name": self.gateway,
            "account_number": self.account_number,
            "transaction_date": _sepay_date(self.at),
            "amount_out": f"{0 if incoming else self.amount}.00",
            "amount_in": f"{self.amount if incoming else 0}.00",
            "accumulated": f"{self.accumulated}.00",
            "transaction_content": self.content,
            "reference_number": self.reference_code,
            "code": self.code,
            "sub_account": self.sub_account,
            "bank_account_id": "19",
        }


class FakeSePay:
    """One merchant account at SePay: settings, ledger, webhooks and API."""

    def __init__(
        self,
        *,
        bank_code: str = "MBBank",
        account_number: str = "0359123123",
        account_name: str = "CONG TY TNHH BILLING GQL",
        api_key: str = "sepay-webhook-key-5b1f0c9e7d",
        api_token: str = "sepay-api-token-9a8b7c6d5e4f",  # noqa: S107 - a fake credential
        prefix: str = "BG",
        gateway: str = "MBBank",
        opening_balance: int = 5_000_000,
    ) -> None:
        self.bank_code = bank_code
        self.account_number = account_number
        self.account_name = account_name
        self.api_key = api_key
        self.api_token = api_token
        self.prefix = prefix
        self.gateway = gateway
        self.balance = opening_balance
        self.transactions: list[Transaction] = []
        self.delivered: set[int] = set()
        """Ids whose webhook was built (the API's ``webhook_success``)."""
        self.requests: list[httpx.Request] = []
        """Every API request the fake served (for asserting what was asked)."""
        self.api_shape = "v2"
        """``v1`` answers in the legacy ``{status, error, messages, transactions}`` shape."""
        self._limits: list[tuple[str, str]] = []
        self._outages = 0
        self._next_id = 228478
        self._next_ref = 1

    def env(self, *, api: bool = True, **extra: str) -> dict[str, str]:
        """``BILLING_GQL_SEPAY_*`` settings for this account (with the API token unless
        ``api=False``); ``extra`` adds or overrides settings by short name."""
        values = {
            "BANK_CODE": self.bank_code,
            "ACCOUNT_NUMBER": self.account_number,
            "ACCOUNT_NAME": self.account_name,
            "WEBHOOK_API_KEY": self.api_key,
            "REFERENCE_PREFIX": self.prefix,
            "API_BASE": "https://userapi.sepay.test",
        }
        if api:
            values["API_TOKEN"] = self.api_token
        values.update(extra)
        return {f"BILLING_GQL_SEPAY_{k}": v for k, v in values.items()}

    # -- the ledger ----------------------------------------------------------------------------

    def extract_code(self, content: str) -> str | None:
        """What SePay's payment-code structure finds in a memo: the prefix and the
        alphanumerics glued to it, as a whole word, upper-cased (or nothing)."""
        found = re.search(rf"(?<![A-Za-z0-9]){self.prefix}[A-Za-z0-9]+", content, re.IGNORECASE)
        return found.group(0).upper() if found else None

    def transfer(
        self,
        amount: int,
        content: str,
        *,
        code: str | None = AUTO,
        transfer_type: str = "in",
        account_number: str | None = None,
        sub_account: str | None = None,
        at: datetime | None = None,
        reference_code: str | None = AUTO,
    ) -> Transaction:
        """Record a transfer on the account (incoming by default) and return it.

        :param code: SePay's extracted payment code; by default found in ``content``, ``None``
            for a transfer SePay did not recognize.
        :param account_number: another account (default: this one).
        :param at: when it happened (default: now, wall clock).
        :param reference_code: the bank's reference (default: a fresh ``FT…``); ``None``
            for a bank that gives none.
        """
        when = (at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        self.balance += amount if transfer_type == "in" else -amount
        if reference_code is AUTO:
            reference_code = f"FT{when:%y%j}{self._next_ref:07d}"
            self._next_ref += 1
        txn = Transaction(
            id=self._next_id,
            uuid=str(uuid.uuid4()),
            gateway=self.gateway,
            at=when,
            account_number=account_number or self.account_number,
            sub_account=sub_account,
            code=self.extract_code(content) if code is AUTO else code,
            content=content,
            transfer_type=transfer_type,
            amount=amount,
            accumulated=self.balance,
            reference_code=reference_code,
            description=f"BankAPINotify {content}",
        )
        self._next_id += 1
        self.transactions.append(txn)
        return txn

    def pay(self, reference: str, amount: int, *, at: datetime | None = None) -> Transaction:
        """The buyer pays: ``amount`` VND in, the memo ``<reference> thanh toan``."""
        return self.transfer(amount, f"{reference} thanh toan", at=at)

    # -- webhooks ------------------------------------------------------------------------------

    def delivery(
        self, txn: Transaction, *, api_key: str | None = None, **changes: Any
    ) -> WebhookDelivery:
        """The webhook POST for ``txn``; the same every time (SePay's retries repeat it).

        :param api_key: send this key instead of the configured one.
        :param changes: payload fields to override (a malformed delivery).
        """
        self.delivered.add(txn.id)
        payload = {**txn.webhook_payload(), **changes}
        return WebhookDelivery(
            json.dumps(payload, ensure_ascii=False).encode(),
            {
                "content-type": "application/json",
                "authorization": f"Apikey {api_key if api_key is not None else self.api_key}",
            },
        )

    def with_key(self, delivery: WebhookDelivery, api_key: str | None) -> WebhookDelivery:
        """``delivery`` with another API key (``None``: no ``Authorization`` header)."""
        headers = {k: v for k, v in delivery.headers.items() if k.lower() != "authorization"}
        if api_key is not None:
            headers["authorization"] = f"Apikey {api_key}"
        return replace(delivery, headers=headers)

    # -- the user API --------------------------------------------------------------------------

    def rate_limit(
        self, times: int = 1, *, retry_after: int = 1, header: str = "Retry-After"
    ) -> None:
        """Answer the next ``times`` API requests 429 with ``header: retry_after``
        (``x-sepay-userapi-retry-after`` is the v1 header)."""
        self._limits.extend([(header, str(retry_after))] * times)

    def outage(self, times: int = 1) -> None:
        """Answer the next ``times`` API requests 503 (SePay down)."""
        self._outages += times

    def transport(self) -> httpx.MockTransport:
        """The user API as an httpx transport."""
        return httpx.MockTransport(self.handle)

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve the user API over HTTP on 127.0.0.1; yields its base URL (``API_BASE``)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                request = httpx.Request(
                    "GET", f"http://{self.headers.get('host', 'localhost')}{self.path}",
                    headers=dict(self.headers.items()),
                )  # fmt: skip
                response = fake.handle(request)
                self.send_response(response.status_code)
                for name, value in response.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            def log_message(self, format: str, *args: Any) -> None:
                return  # keep test output quiet

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one user-API request."""
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {self.api_token}":
            return httpx.Response(
                401,
                json={"status": "error", "error_code": "UNAUTHENTICATED", "message": "bad token"},
            )
        if self._limits:
            header, value = self._limits.pop(0)
            return httpx.Response(
                429, headers={header: value}, json={"status": "error", "message": "slow down"}
            )
        if self._outages:
            self._outages -= 1
            return httpx.Response(503, text="Service Unavailable")
        details = _DETAILS.fullmatch(request.url.path)
        if request.method == "GET" and details is not None:
            return self._details(int(details.group(1)))
        if request.method != "GET" or request.url.path != "/v2/transactions":
            return httpx.Response(404, json={"status": "error", "message": "not found"})
        return self._list(request.url.params)

    def _details(self, sepay_id: int) -> httpx.Response:
        found = [t for t in self.transactions if t.id == sepay_id]
        if not found:
            return httpx.Response(
                404, json={"status": 404, "error": "transaction not found", "messages": {}}
            )
        return _v1(transaction=found[0].api_v1())

    def _list(self, params: httpx.QueryParams) -> httpx.Response:
        rows = list(self.transactions)
        if params.get("transaction_date_from"):
            try:
                since = _read_sepay_date(params["transaction_date_from"])
            except ValueError:
                return httpx.Response(
                    400,
                    json={"status": "error", "message": "transaction_date_from is not a date"},
                )
            rows = [t for t in rows if t.at >= since]
        if params.get("transfer_type") in ("in", "out"):
            rows = [t for t in rows if t.transfer_type == params["transfer_type"]]
        descending = params.get("transaction_date_sort", "desc") != "asc"
        rows.sort(key=lambda t: (t.at, t.id), reverse=descending)
        if self.api_shape == "v1":
            return _v1(transactions=[t.api_v1() for t in rows])
        per_page = min(max(int(params.get("per_page", "20")), 1), 100)
        page = max(int(params.get("page", "1")), 1)
        last = max(math.ceil(len(rows) / per_page), 1)
        chunk = rows[(page - 1) * per_page : page * per_page]
        return httpx.Response(
            200,
            json={
                "status": "success",
                "data": [t.api_v2(t.id in self.delivered) for t in chunk],
                "meta": {
                    "pagination": {
                        "total": len(rows),
                        "per_page": per_page,
                        "current_page": page,
                        "last_page": last,
                        "has_more": page < last,
                    }
                },
            },
        )


def _v1(**data: Any) -> httpx.Response:
    """A successful answer in the legacy v1 shape ``{status, error, messages, ...}``."""
    return httpx.Response(
        200, json={"status": 200, "error": None, "messages": {"success": True}, **data}
    )
