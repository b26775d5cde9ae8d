"""Signed, short-lived links to an invoice's PDF (``Invoice.pdfUrl``).

``/invoices/{id}.pdf?expires=<unix seconds>&signature=<hex HMAC-SHA256 of "{id}.{expires}">``:
the key is ``BILLING_GQL_INVOICE_LINK_SECRET``, else one derived from the admin keys, else a
random key of this process (links then work only on the process that made them). Expiry is
wall-clock time (links are a security matter, not billing time).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from uuid import UUID

from billing_gql.settings import Settings

__all__ = ["pdf_path", "pdf_url", "verify_pdf_link"]

_PROCESS_KEY = secrets.token_bytes(32)


def _key(settings: Settings) -> bytes:
    if settings.invoices.link_secret:
        return settings.invoices.link_secret.encode("utf-8")
    if settings.auth.admin_keys:
        material = "\0".join(sorted(settings.auth.admin_keys)).encode("utf-8")
        return hashlib.sha256(b"billing-gql invoice links\0" + material).digest()
    return _PROCESS_KEY


def _signature(settings: Settings, invoice_id: UUID, expires: int) -> str:
    message = f"{invoice_id}.{expires}".encode()
    return hmac.new(_key(settings), message, hashlib.sha256).hexdigest()


def pdf_path(invoice_id: UUID) -> str:
    return f"/invoices/{invoice_id}.pdf"


def pdf_url(settings: Settings, invoice_id: UUID, now: float | None = None) -> str:
    """A link to the invoice's PDF, valid for ``link_ttl_seconds`` (absolute when
    ``BILLING_GQL_PUBLIC_URL`` is set, else a path on this service)."""
    expires = int(now if now is not None else time.time()) + settings.invoices.link_ttl_seconds
    signature = _signature(settings, invoice_id, expires)
    return (
        f"{settings.invoices.public_url}{pdf_path(invoice_id)}"
        f"?expires={expires}&signature={signature}"
    )


def verify_pdf_link(
    settings: Settings,
    invoice_id: UUID,
    expires: str | None,
    signature: str | None,
    now: float | None = None,
) -> bool:
    """Whether ``expires``/``signature`` make a valid, unexpired link to ``invoice_id``."""
    if not expires or not signature or not expires.isdigit():
        return False
    if int(expires) < (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(_signature(settings, invoice_id, int(expires)), signature)
