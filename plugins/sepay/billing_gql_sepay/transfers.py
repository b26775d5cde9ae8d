"""Bank transfers as SePay reports them — webhook deliveries and user-API transactions — read
defensively into one :class:`Transfer`, and turned into ``payment.received`` events.

Wire facts (docs/providers.md#sepay-bank-transfer-webhooks): the webhook carries ``id``
(numeric), ``gateway``,
``transactionDate`` (``YYYY-MM-DD HH:MM:SS``, Vietnam time, no offset), ``accountNumber``,
``subAccount``, ``code`` (the payment code SePay extracted, or null), ``content`` (the memo),
``transferType`` (``in``/``out``), ``transferAmount`` (integer VND), ``accumulated``,
``referenceCode`` (the bank's reference) and ``description``. The user API (v2; v1 still
answers) names them ``transaction_date``, ``account_number``, ``transfer_type``,
``amount_in``/``amount_out`` (integers in v2, decimal strings in v1),
``transaction_content``, ``reference_number`` and ``code``; v2 ids are UUIDs.

The two id spaces do not meet, so one transfer is recognized across them by the bank's
reference (webhook ``referenceCode`` = API ``reference_number``): it is the payment's
``provider_ref``, unique per provider in the core.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from billing_gql import BillingEvent, EventKind, Money, PaymentInfo
from billing_gql_sepay.references import ReferenceFormat

__all__ = [
    "CURRENCY",
    "VIETNAM",
    "Transfer",
    "format_vietnam_time",
    "parse_amount",
    "parse_vietnam_time",
    "transfer_from_api",
    "transfer_from_webhook",
]

VIETNAM = timezone(timedelta(hours=7), "ICT")
"""Vietnam's time zone (UTC+7 all year, no daylight saving): SePay's dates carry no offset."""

CURRENCY = "VND"

_DIGITS = re.compile(r"\d+")


def parse_vietnam_time(value: object) -> datetime | None:
    """A SePay date as UTC: ``2025-06-01 14:18:18`` is Vietnam time (07:18:18 UTC).

    ISO forms (``T`` separator, fractions) are read too, and an explicit offset is honoured.
    ``None`` when it cannot be read.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=VIETNAM)
    return parsed.astimezone(UTC)


def format_vietnam_time(moment: datetime) -> str:
    """``moment`` as SePay writes dates: ``YYYY-MM-DD HH:MM:SS`` in Vietnam time."""
    return moment.astimezone(VIETNAM).strftime("%Y-%m-%d %H:%M:%S")


def parse_amount(value: object) -> int | None:
    """Whole VND from an int, or a decimal string/number with no fraction (v1 sends
    ``"199000.00"``); ``None`` when it is not a whole, finite amount."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float | str):
        try:
            number = Decimal(str(value).strip().replace(",", ""))
        except InvalidOperation:
            return None
        if not number.is_finite() or number != number.to_integral_value():
            return None
        return int(number)
    return None


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        text = str(value).strip()
        return text or None
    return None


def _account(value: object) -> str | None:
    text = _text(value)
    return re.sub(r"\s+", "", text) if text else None


def _bank_reference(value: object) -> str | None:
    # Compared across webhooks and the API: spacing and case must not make two keys.
    text = _account(value)
    return text.upper() if text else None


@dataclass(frozen=True)
class Transfer:
    """One money movement on a bank account SePay watches."""

    sepay_id: str
    """SePay's transaction id: numeric in webhooks and API v1, a UUID in API v2."""
    direction: str
    """``in``, ``out``, or ``unknown``."""
    amount: int | None
    """Whole VND moved (``None``: unreadable)."""
    account_number: str | None
    sub_account: str | None
    code: str | None
    content: str | None
    description: str | None
    reference_code: str | None
    """The bank's reference: the same for a transfer in webhooks and the API."""
    gateway: str | None
    transaction_date: str | None
    """As SePay wrote it (Vietnam time)."""
    occurred_at: datetime | None
    """``transaction_date`` in UTC."""
    source: str
    """``webhook`` or ``api``."""

    def to_account(self, account_number: str) -> bool:
        """Whether the money moved on our account (or one of its sub-accounts/VAs)."""
        ours = _account(account_number)
        return ours is not None and ours in (self.account_number, self.sub_account)

    @property
    def payment_ref(self) -> str | None:
        """The key that identifies this transfer in webhooks and the API alike: the bank's
        reference, else SePay's numeric id (webhooks and API v1 share it). ``None`` for an
        API v2 row without a bank reference: its UUID matches no webhook, so it cannot be
        told apart from a delivery of the same transfer."""
        if self.reference_code:
            return self.reference_code
        if self.source == "webhook" or _DIGITS.fullmatch(self.sepay_id):
            return self.sepay_id
        return None

    def event(
        self, fmt: ReferenceFormat, received_at: datetime, *, flag: str | None = None
    ) -> BillingEvent:
        """The ``payment.received`` event for this (incoming, ours, readable) transfer;
        ``flag``: why it must not count (kept flagged by the core)."""
        assert self.amount is not None and self.payment_ref is not None
        reference = fmt.from_transfer(self.code, self.content, self.description)
        when = self.occurred_at or received_at
        details: dict[str, Any] = {
            "gateway": self.gateway,
            "accountNumber": self.account_number,
            "content": self.content,
            "transactionDate": self.transaction_date,
            "sepay_id": self.sepay_id,
        }
        if self.sub_account:
            details["subAccount"] = self.sub_account
        if self.code:
            details["code"] = self.code
        if self.source != "webhook":
            details["source"] = self.source
        return BillingEvent(
            kind=EventKind.PAYMENT_RECEIVED,
            occurred_at=when,
            payment=PaymentInfo(
                provider_ref=self.payment_ref,
                amount=Money(self.amount, CURRENCY),
                reference=reference,
                received_at=when,
                details=details,
                flag=flag,
            ),
        )


def _direction(value: object, amount_in: int | None, amount_out: int | None) -> str:
    text = _text(value)
    if text is not None:
        lowered = text.lower()
        if lowered in ("in", "out"):
            return lowered
    if amount_in and amount_in > 0:
        return "in"
    if amount_out and amount_out > 0:
        return "out"
    return "unknown"


def transfer_from_webhook(payload: Mapping[str, Any]) -> Transfer:
    """A webhook body (already known to be a JSON object with an ``id``)."""
    date = _text(payload.get("transactionDate"))
    amount = parse_amount(payload.get("transferAmount"))
    return Transfer(
        sepay_id=str(payload["id"]).strip(),
        direction=_direction(payload.get("transferType"), None, None),
        amount=amount,
        account_number=_account(payload.get("accountNumber")),
        sub_account=_account(payload.get("subAccount")),
        code=_text(payload.get("code")),
        content=_text(payload.get("content")),
        description=_text(payload.get("description")),
        reference_code=_bank_reference(payload.get("referenceCode")),
        gateway=_text(payload.get("gateway")),
        transaction_date=date,
        occurred_at=parse_vietnam_time(date),
        source="webhook",
    )


def _first(row: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = row.get(name)
        if value is not None and value != "":
            return value
    return None


def transfer_from_api(row: Mapping[str, Any]) -> Transfer | None:
    """A transaction from the user API (v2 or v1 shape); ``None`` when it has no id."""
    sepay_id = _text(row.get("id"))
    if sepay_id is None:
        return None
    amount_in = parse_amount(_first(row, "amount_in", "amountIn"))
    amount_out = parse_amount(_first(row, "amount_out", "amountOut"))
    direction = _direction(_first(row, "transfer_type", "transferType"), amount_in, amount_out)
    amount = amount_in if direction == "in" else amount_out
    if amount is None:
        amount = parse_amount(_first(row, "transfer_amount", "transferAmount", "amount"))
    date = _text(_first(row, "transaction_date", "transactionDate"))
    return Transfer(
        sepay_id=sepay_id,
        direction=direction,
        amount=amount,
        account_number=_account(_first(row, "account_number", "accountNumber")),
        sub_account=_account(_first(row, "sub_account", "subAccount", "va", "virtual_account")),
        code=_text(row.get("code")),
        content=_text(_first(row, "transaction_content", "content")),
        description=_text(row.get("description")),
        reference_code=_bank_reference(
            _first(row, "reference_number", "referenceCode", "reference_code")
        ),
        gateway=_text(_first(row, "gateway", "bank_brand_name", "bank_short_name")),
        transaction_date=date,
        occurred_at=parse_vietnam_time(date),
        source="api",
    )
