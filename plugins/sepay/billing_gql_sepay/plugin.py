"""The SePay provider: VietQR bank-transfer checkouts, transfer webhooks, reconciliation.

Registered through the ``billing_gql`` entry point ``sepay = "billing_gql_sepay.plugin"``.

How a purchase goes: ``createCheckout`` reserves a payment reference (``payment_reference``)
and answers ``bankTransfer`` instructions with a SePay VietQR image URL carrying the account,
the amount and the reference as the memo. The buyer transfers; SePay posts the incoming
transfer to ``/webhooks/sepay``; ``parse_webhook`` turns it into ``payment.received`` with the
reference found in the memo, and the core matches it to the checkout, adds it to
``amountPaid`` and completes the checkout once paid in full. Renewals are pushed: the core
issues a renewal checkout with a new reference each period. A missed webhook is repaired by
:meth:`SePayProvider.reconcile` (``billing-gql reconcile sepay``, and the worker every
``RECONCILE_MINUTES`` when ``API_TOKEN`` is set).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from billing_gql import (
    MAX_AMOUNT_MINOR,
    BankTransferInstructions,
    BillingEvent,
    CheckoutRequest,
    CheckoutSession,
    NotSupported,
    Provider,
    ProviderContext,
    ProviderError,
    ProviderSettings,
    ReconcileRequest,
    ReconcileResult,
    StoredDelivery,
    UserInputError,
    WebhookEnvelope,
    WebhookPayloadError,
    WebhookRequest,
    WebhookSignatureError,
    WebhookSourceError,
    hookimpl,
)
from billing_gql_sepay.api import SePayApi
from billing_gql_sepay.references import ReferenceFormat
from billing_gql_sepay.transfers import (
    CURRENCY,
    Transfer,
    format_vietnam_time,
    parse_amount,
    parse_vietnam_time,
    transfer_from_api,
    transfer_from_webhook,
)

__all__ = ["SePayProvider", "register_providers"]

FIRST_LOOKBACK = timedelta(days=3)
"""How far back the first reconciliation reads (SePay retries webhooks for at most 5 hours)."""
OVERLAP = timedelta(hours=6)
"""Each reconciliation re-reads this much before the newest transfer it saw: a bank may post a
transfer late, and what is read twice is recognized by its bank reference."""
MAX_PAGES = 200
"""Bound on the pages one reconciliation reads (100 transactions each)."""


class SePayProvider(Provider):
    """Bank transfers through SePay (Vietnam, VND)."""

    name = "sepay"
    display_name = "SePay (bank transfer)"
    required_settings = ("BANK_CODE", "ACCOUNT_NUMBER", "WEBHOOK_API_KEY")
    optional_settings = {
        "ACCOUNT_NAME": None,
        "REFERENCE_PREFIX": "BG",
        "REFERENCE_LENGTH": "8",
        "QR_BASE": "https://qr.sepay.vn/img",
        "API_TOKEN": None,
        "API_BASE": "https://userapi.sepay.vn",
        "RECONCILE_MINUTES": "15",
        "API_V1_BASE": "https://my.sepay.vn",
        "CONFIRM_TRANSFERS": "0",
        "ALLOWED_IPS": None,
        "TRUSTED_PROXIES": None,
    }
    secret_settings = ("WEBHOOK_API_KEY", "API_TOKEN")
    currencies = (CURRENCY,)
    needs_provider_ref = False
    charges_renewals = False
    hosted_checkout = False
    bank_transfer = True
    webhook_ack = {"success": True}

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        s = self.settings
        self.references = ReferenceFormat.build(s["REFERENCE_PREFIX"], s.int("REFERENCE_LENGTH", 8))
        self.bank_code = s["BANK_CODE"].strip()
        self.account_number = "".join(s["ACCOUNT_NUMBER"].split())
        self.account_name = s.get("ACCOUNT_NAME") or None
        self.qr_base = s["QR_BASE"].strip()
        self._api_key = s["WEBHOOK_API_KEY"].encode()
        minutes = s.int("RECONCILE_MINUTES", 15)
        if minutes < 1:
            raise ValueError("BILLING_GQL_SEPAY_RECONCILE_MINUTES must be at least 1")
        self.reconcile_minutes = minutes
        token = s.get("API_TOKEN")
        self.api: SePayApi | None = (
            SePayApi(context.http, base_url=s["API_BASE"], token=token, v1_base=s["API_V1_BASE"])
            if token
            else None
        )
        self.confirm_transfers = _flag(s["CONFIRM_TRANSFERS"], "CONFIRM_TRANSFERS")
        if self.confirm_transfers and self.api is None:
            raise ValueError(
                "BILLING_GQL_SEPAY_CONFIRM_TRANSFERS needs BILLING_GQL_SEPAY_API_TOKEN"
            )
        self.allowed_ips = _networks(s.get("ALLOWED_IPS"), "ALLOWED_IPS")
        self.trusted_proxies = _networks(s.get("TRUSTED_PROXIES"), "TRUSTED_PROXIES")

    @classmethod
    def capabilities_for(cls, settings: ProviderSettings) -> frozenset[str]:
        """``reconcile`` only with ``API_TOKEN`` (it reads SePay's user API); the rest always."""
        caps = cls.capabilities()
        return caps if settings.get("API_TOKEN") else caps - {"reconcile"}

    async def aclose(self) -> None:
        if self.api is not None:
            await self.api.aclose()

    # -- checkout ------------------------------------------------------------------------------

    def payment_reference(self) -> str:
        """``REFERENCE_PREFIX`` and ``REFERENCE_LENGTH`` unambiguous characters."""
        return self.references.new()

    def qr_code_url(self, amount: int, reference: str) -> str:
        """The SePay VietQR image asking for ``amount`` VND with ``reference`` as the memo."""
        query = urlencode(
            [
                ("acc", self.account_number),
                ("bank", self.bank_code),
                ("amount", str(amount)),
                ("des", reference),
            ]
        )
        return f"{self.qr_base}{'&' if '?' in self.qr_base else '?'}{query}"

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """Transfer instructions: our account, the amount due and the reserved reference."""
        if request.amount.currency != CURRENCY:
            raise UserInputError(
                "UNSUPPORTED_CURRENCY",
                f"SePay bank transfers are in VND, not {request.amount.currency}",
                ["currency"],
            )
        reference = request.payment_reference
        if not reference:
            raise ProviderError("no payment reference was reserved for this checkout")
        amount = request.amount.minor  # VND has no minor unit: minor units are dong
        return CheckoutSession(
            bank_transfer=BankTransferInstructions(
                bank_code=self.bank_code,
                account_number=self.account_number,
                account_name=self.account_name,
                reference=reference,
                amount=request.amount,
                qr_code_url=self.qr_code_url(amount, reference),
            )
        )

    # -- webhooks ------------------------------------------------------------------------------

    def sender(self, request: WebhookRequest) -> str | None:
        """The delivery's sender address: the connection's peer, or — when that peer is one
        of ``TRUSTED_PROXIES`` — the right-most ``X-Forwarded-For`` entry that is not a
        trusted proxy (entries further left are whatever the client claimed)."""
        peer = request.client
        if not self.trusted_proxies or not _within(peer, self.trusted_proxies):
            return peer
        hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not _within(hop, self.trusted_proxies):
                return hop
        return peer

    def verify_webhook(self, request: WebhookRequest) -> WebhookEnvelope:
        """The sender first (``ALLOWED_IPS``, when set: :class:`WebhookSourceError`), then
        ``Authorization: Apikey <WEBHOOK_API_KEY>``, compared in constant time; the event id
        is SePay's transaction ``id`` (its retries repeat it). A ``transferAmount`` past
        ``MAX_AMOUNT_MINOR`` is refused (400) before anything is stored: no bank moves that
        much, and it could not be recorded."""
        if self.allowed_ips:
            sender = self.sender(request)
            if not _within(sender, self.allowed_ips):
                raise WebhookSourceError(f"sender {sender or 'unknown'} is not in ALLOWED_IPS")
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "apikey" or not hmac.compare_digest(
            given.strip().encode(), self._api_key
        ):
            raise WebhookSignatureError("missing or wrong Apikey credentials")
        try:
            payload = json.loads(request.body)
        except ValueError as exc:
            raise WebhookPayloadError(f"not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise WebhookPayloadError("the body is not a JSON object")
        sepay_id = payload.get("id")
        if isinstance(sepay_id, bool) or not isinstance(sepay_id, int | str):
            raise WebhookPayloadError("the transfer has no id")
        event_id = str(sepay_id).strip()
        if not event_id:
            raise WebhookPayloadError("the transfer has no id")
        amount = parse_amount(payload.get("transferAmount"))
        if amount is not None and abs(amount) > MAX_AMOUNT_MINOR:
            raise WebhookPayloadError(
                f"transferAmount is more than {MAX_AMOUNT_MINOR} VND, the largest accepted"
            )
        direction = payload.get("transferType")
        return WebhookEnvelope(
            event_id=event_id,
            event_type=f"transfer.{direction}" if isinstance(direction, str) else "transfer",
            occurred_at=parse_vietnam_time(payload.get("transactionDate")),
        )

    def _counts(self, transfer: Transfer) -> str | None:
        """Why ``transfer`` is not money in for us (``None``: it is)."""
        if transfer.direction != "in":
            return f"transfer type {transfer.direction!r}"
        if not transfer.to_account(self.account_number):
            return f"another account ({transfer.account_number or 'none'})"
        if transfer.amount is not None and transfer.amount <= 0:
            return f"amount {transfer.amount}"
        if transfer.amount is not None and transfer.amount > MAX_AMOUNT_MINOR:
            return f"amount {transfer.amount} is past MAX_AMOUNT_MINOR"
        return None

    async def parse_webhook(self, delivery: StoredDelivery) -> Sequence[BillingEvent]:
        """An incoming transfer to our account → ``payment.received`` (reference from
        ``code``, else from the memo); anything else → no events (the delivery is ignored)."""
        payload = delivery.json()
        transfer = transfer_from_webhook(payload)
        reason = self._counts(transfer)
        if reason is not None:
            self.log.info("SePay transfer %s ignored: %s", transfer.sepay_id, reason)
            return []
        if transfer.amount is None:
            # Money may have arrived: keep the delivery failed (visible, replayable).
            raise ValueError(f"SePay transfer {transfer.sepay_id}: unreadable transferAmount")
        flag = await self.unconfirmed(transfer) if self.confirm_transfers else None
        return [transfer.event(self.references, delivery.received_at, flag=flag)]

    async def unconfirmed(self, transfer: Transfer) -> str | None:
        """With ``CONFIRM_TRANSFERS``: why SePay's API does not confirm ``transfer`` (it does
        not know its id, or knows it with another amount, account, direction or bank
        reference), else ``None``. An unreachable API raises: the delivery is retried."""
        assert self.api is not None
        row = await self.api.transaction(transfer.sepay_id)
        known = transfer_from_api(row) if row else None
        if known is None:
            return f"SePay's API does not know transaction {transfer.sepay_id}"
        differences = [
            what
            for what, same in (
                ("amount", known.amount == transfer.amount),
                ("direction", known.direction == "in"),
                ("account", known.to_account(self.account_number)),
                (
                    "bank reference",
                    known.reference_code is None or known.reference_code == transfer.reference_code,
                ),
            )
            if not same
        ]
        if differences:
            return (
                f"SePay's API knows transaction {transfer.sepay_id} with another "
                + ", ".join(differences)
                + (f" ({known.amount} VND)" if "amount" in differences else "")
            )
        return None

    # -- reconciliation ------------------------------------------------------------------------

    def reconcile_interval(self) -> timedelta | None:
        """Every ``RECONCILE_MINUTES`` when ``API_TOKEN`` is set, else never on a schedule."""
        return timedelta(minutes=self.reconcile_minutes) if self.api is not None else None

    async def reconcile(self, request: ReconcileRequest) -> ReconcileResult:
        """Incoming transfers since the last run, from the user API, as ``payment.received``
        events keyed like the webhooks' (the bank reference), so a transfer is counted once
        whichever way it arrives.

        The cursor is ``{"since": "<YYYY-MM-DD HH:MM:SS>"}`` (Vietnam time): where the next
        run starts reading.
        """
        if self.api is None:
            raise NotSupported("set BILLING_GQL_SEPAY_API_TOKEN to reconcile with SePay")
        start = _cursor_since(request.cursor) or request.now - FIRST_LOOKBACK
        date_from = format_vietnam_time(start)
        events: dict[str, BillingEvent] = {}
        newest: datetime | None = None
        skipped: dict[str, int] = {}
        page, more = 1, True
        while more and page <= MAX_PAGES:
            result = await self.api.transactions(date_from=date_from, page=page)
            for row in result.rows:
                transfer = transfer_from_api(row)
                if transfer is None:
                    skipped["no id"] = skipped.get("no id", 0) + 1
                    continue
                if transfer.occurred_at is not None and (
                    newest is None or transfer.occurred_at > newest
                ):
                    newest = transfer.occurred_at
                reason = self._counts(transfer)
                if reason is None and transfer.amount is None:
                    reason = "unreadable amount"
                if reason is None and transfer.payment_ref is None:
                    # Without the bank's reference it cannot be told apart from its webhook.
                    self.log.warning(
                        "SePay transaction %s has no reference number: not applied "
                        "(check it in the SePay dashboard)",
                        transfer.sepay_id,
                    )
                    reason = "no reference number"
                if reason is not None:
                    key = reason.split(" (")[0]
                    skipped[key] = skipped.get(key, 0) + 1
                    continue
                assert transfer.payment_ref is not None
                events.setdefault(
                    transfer.payment_ref, transfer.event(self.references, request.now)
                )
            more = result.has_more
            page += 1
        if more:
            self.log.warning("SePay reconciliation stopped after %d pages", MAX_PAGES)
        if skipped:
            self.log.info("SePay reconciliation skipped %s", skipped)
        seen = min(newest, request.now) if newest is not None else request.now
        since = max(start, seen - OVERLAP)
        return ReconcileResult(list(events.values()), {"since": format_vietnam_time(since)})


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _flag(raw: str | None, name: str) -> bool:
    text = (raw or "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"BILLING_GQL_SEPAY_{name} must be 1 or 0")


def _networks(raw: str | None, name: str) -> tuple[Network, ...]:
    """Comma-separated addresses and CIDR blocks (``203.0.113.5, 2001:db8::/32``)."""
    out = []
    for item in (raw or "").split(","):
        if item.strip():
            try:
                out.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"BILLING_GQL_SEPAY_{name}: {item.strip()!r} is not an IP address or CIDR"
                ) from None
    return tuple(out)


def _within(address: str | None, networks: Sequence[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def _cursor_since(cursor: Any) -> datetime | None:
    if not isinstance(cursor, dict):
        try:
            cursor = dict(cursor)
        except (TypeError, ValueError):
            return None
    return parse_vietnam_time(cursor.get("since"))


@hookimpl
def register_providers() -> Sequence[type[Provider]]:
    """billing-gql's plugin hook: this plugin contributes the ``sepay`` provider."""
    return [SePayProvider]
