"""``GET /invoices/{id}.pdf``: an invoice's PDF.

Who may read it: an admin key or the invoice's customer's session token (``Authorization:
Bearer …``), or anyone holding a signed link that has not expired (``Invoice.pdfUrl``:
``?expires=…&signature=…``). 401 without valid credentials, 403 for another customer's
invoice, 404 for an unknown one (or a draft, which has no document yet).
"""

from __future__ import annotations

import hmac
from typing import Any
from uuid import UUID

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from billing_gql.context import ServiceContext
from billing_gql.customers.service import parse_uuid, session_for_token
from billing_gql.invoices.documents import invoice_document, load_invoice_head
from billing_gql.invoices.links import verify_pdf_link

__all__ = ["invoice_routes"]


def _problem(reason: str, status: int) -> Response[dict[str, Any]]:
    return Response(
        content={"ok": False, "error": reason}, status_code=status, media_type="application/json"
    )


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _reader(runtime: ServiceContext, request: Request[Any, Any, Any]) -> str | UUID | None:
    """``"admin"``, the customer id of a live session token, or ``None``."""
    token = _bearer(request.headers.get("authorization"))
    if token is None:
        return None
    admin = False
    for key in runtime.settings.auth.admin_keys:
        admin |= hmac.compare_digest(token.encode("utf-8"), key.encode("utf-8"))
    if admin:
        return "admin"
    session = await session_for_token(runtime.db, token)
    return session[0] if session is not None else None


def invoice_routes() -> list[HTTPRouteHandler]:
    @get("/invoices/{name:str}", status_code=200)
    async def invoice_pdf(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        runtime: ServiceContext = request.app.state.runtime
        invoice_id = parse_uuid(name.removesuffix(".pdf")) if name.endswith(".pdf") else None
        if invoice_id is None:
            return _problem("not found", 404)
        signed = verify_pdf_link(
            runtime.settings,
            invoice_id,
            request.query_params.get("expires"),
            request.query_params.get("signature"),
        )
        reader = None if signed else await _reader(runtime, request)
        if not signed and reader is None:
            return _problem("an admin key, the customer's session token or a signed link", 401)
        invoice = await load_invoice_head(runtime.db, invoice_id)
        if invoice is None or invoice.number is None:
            return _problem("not found", 404)
        if not signed and reader not in ("admin", invoice.customer_id):
            return _problem("a customer token reaches only its own invoices", 403)
        body = await invoice_document(runtime.db, invoice, runtime.settings.invoices)
        return Response(
            content=body,
            status_code=200,
            media_type="application/pdf",
            headers={
                "content-disposition": f'inline; filename="{invoice.number}.pdf"',
                "cache-control": "private, no-store",
            },
        )

    return [invoice_pdf]
