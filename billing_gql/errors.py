"""Errors shared by services, plugins and the API faces.

::

    BillingError                      base; never shown raw to a client
    ├── UserInputError                a userErrors entry: code, message, field path
    │   └── UserInputErrors           several at once (a batch with many bad rows)
    ├── ProviderError                 the provider refused (PROVIDER_ERROR, or a finer code)
    │   └── ProviderUnavailable       the provider could not be reached (PROVIDER_UNAVAILABLE)
    ├── NotSupported                  the provider cannot do that (NOT_SUPPORTED)
    ├── WebhookSignatureError         bad or missing signature/credentials → HTTP 401
    ├── WebhookPayloadError           body unreadable after a valid signature → HTTP 400
    └── PluginError                   plugin discovery/registration failed at startup

Services raise these; the GraphQL face turns :class:`UserInputError` (and the provider errors)
into ``userErrors`` entries, the webhook route turns the webhook errors into status codes.
Messages must never contain secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

__all__ = [
    "BillingError",
    "ErrorCode",
    "NotSupported",
    "PluginError",
    "ProviderError",
    "ProviderUnavailable",
    "UserInputError",
    "UserInputErrors",
    "WebhookPayloadError",
    "WebhookSignatureError",
    "WebhookSourceError",
]


class ErrorCode(StrEnum):
    """The closed list of userErrors codes (docs/api.md#usererrors-codes): ``UserError.code``
    in the schema (the GraphQL enum ``UserErrorCode``) and what :class:`UserInputError` takes."""

    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    INVALID_CURRENCY = "INVALID_CURRENCY"
    UNSUPPORTED_CURRENCY = "UNSUPPORTED_CURRENCY"
    PLAN_ARCHIVED = "PLAN_ARCHIVED"
    PROVIDER_NOT_CONFIGURED = "PROVIDER_NOT_CONFIGURED"
    NO_PROVIDER = "NO_PROVIDER"
    PROVIDER_REF_MISSING = "PROVIDER_REF_MISSING"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    INVALID_STATE = "INVALID_STATE"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    TOO_MANY_EVENTS = "TOO_MANY_EVENTS"
    UNKNOWN_METER = "UNKNOWN_METER"
    UNKNOWN_CUSTOMER = "UNKNOWN_CUSTOMER"
    TIMESTAMP_IN_FUTURE = "TIMESTAMP_IN_FUTURE"
    NOT_SUPPORTED = "NOT_SUPPORTED"
    FEATURE_DISABLED = "FEATURE_DISABLED"
    ALREADY_SUBSCRIBED = "ALREADY_SUBSCRIBED"
    REDIRECT_NOT_ALLOWED = "REDIRECT_NOT_ALLOWED"
    WEBHOOK_TARGET_NOT_ALLOWED = "WEBHOOK_TARGET_NOT_ALLOWED"
    AMOUNT_TOO_LARGE = "AMOUNT_TOO_LARGE"
    QUANTITY_TOO_LARGE = "QUANTITY_TOO_LARGE"
    REFUND_EXCEEDS_PAYMENT = "REFUND_EXCEEDS_PAYMENT"
    PAYMENT_NOT_REFUNDABLE = "PAYMENT_NOT_REFUNDABLE"
    CHECKOUT_IN_PROGRESS = "CHECKOUT_IN_PROGRESS"
    CUSTOMER_HAS_LIVE_SUBSCRIPTION = "CUSTOMER_HAS_LIVE_SUBSCRIPTION"


class BillingError(Exception):
    """Base of billing-gql's own errors."""


class UserInputError(BillingError):
    """A problem the caller can fix; becomes one ``userErrors`` entry."""

    def __init__(
        self, code: str | ErrorCode, message: str, field: Sequence[str] | None = None
    ) -> None:
        # A plugin may pass the code as a plain string: it must still be one of the list.
        try:
            self.code = ErrorCode(code)
        except ValueError:
            raise ValueError(f'unknown user error code "{code}"') from None
        super().__init__(message)
        self.message = message
        self.field = list(field) if field is not None else None

    def __repr__(self) -> str:
        return f"UserInputError({self.code.value!r}, {self.message!r}, {self.field!r})"


class UserInputErrors(BillingError):
    """Several :class:`UserInputError` at once; nothing was written."""

    def __init__(self, errors: Sequence[UserInputError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = list(errors)


class ProviderError(UserInputError):
    """The provider answered with an error. ``message`` is the provider's own explanation."""

    def __init__(
        self,
        message: str,
        *,
        code: str | ErrorCode = ErrorCode.PROVIDER_ERROR,
        provider_code: str | None = None,
        status: int | None = None,
        field: Sequence[str] | None = None,
    ) -> None:
        super().__init__(code, message, field)
        self.provider_code = provider_code
        self.status = status


class ProviderUnavailable(ProviderError):
    """The provider could not be reached, timed out, or kept answering 429/5xx."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, code=ErrorCode.PROVIDER_UNAVAILABLE, status=status)


class NotSupported(UserInputError):
    """The provider (or the plan) cannot do the requested operation."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.NOT_SUPPORTED, message)


class WebhookSignatureError(BillingError):
    """The delivery's signature or credentials are missing, wrong or stale (HTTP 401)."""


class WebhookSourceError(BillingError):
    """The delivery comes from an address the provider does not send from (HTTP 403)."""


class WebhookPayloadError(BillingError):
    """The body cannot be read although its signature is valid (HTTP 400)."""


class PluginError(BillingError):
    """Plugins could not be loaded as configured (a startup error)."""
