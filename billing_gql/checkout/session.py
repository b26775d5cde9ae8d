"""The provider session of a checkout: :func:`prepare_checkout` creates it under the checkout's
row lock, once, with a stable idempotency key (see :mod:`billing_gql.checkout.service`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from billing_gql.catalog.service import load_plans
from billing_gql.context import ServiceContext
from billing_gql.core import checkout as m
from billing_gql.core.checkout import Checkout, checkout_from_row
from billing_gql.core.events import checkout_event
from billing_gql.customers.service import load_customers
from billing_gql.errors import UserInputError
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import (
    METADATA_CHECKOUT_ID,
    METADATA_CUSTOMER_ID,
    METADATA_SUBSCRIPTION_ID,
    CheckoutRequest,
    CheckoutSession,
    DomainEvent,
)
from billing_gql.routing import customer_info, error_text, log_failure, plan_info, redact
from billing_gql.store.checkouts_sql import mark_checkout_failed, record_checkout_session
from billing_gql.store.customers_sql import remember_provider_customer

__all__ = ["CheckoutResult", "prepare_checkout", "stored_error"]

# The service's logger: its lines keep their logger name.
log = logging.getLogger("billing_gql.checkout.service")


@dataclass(frozen=True)
class CheckoutResult:
    checkout: Checkout
    error: UserInputError | None = None
    """Set when the checkout FAILED at the provider (its code and message)."""


def stored_error(checkout: Checkout) -> UserInputError | None:
    if checkout.status != m.FAILED:
        return None
    code = checkout.error_code or "PROVIDER_ERROR"
    field = checkout.error_field
    try:
        return UserInputError(code, checkout.error or "the provider refused the checkout", field)
    except ValueError:
        return UserInputError("PROVIDER_ERROR", checkout.error or "the provider failed", field)


def _bank_json(session: CheckoutSession) -> dict[str, Any] | None:
    bt = session.bank_transfer
    if bt is None:
        return None
    return {
        "bank_code": bt.bank_code,
        "account_number": bt.account_number,
        "account_name": bt.account_name,
        "reference": bt.reference,
        "amount_minor": bt.amount.minor,
        "currency": bt.amount.currency,
        "qr_code_url": bt.qr_code_url,
    }


async def _request(
    conn: asyncpg.Connection, checkout: Checkout, provider: Provider
) -> CheckoutRequest:
    plan = (await load_plans(conn, ids=[checkout.plan_id]))[0]
    customer = (await load_customers(conn, ids=[checkout.customer_id]))[0]
    metadata = {
        METADATA_CHECKOUT_ID: str(checkout.id),
        METADATA_CUSTOMER_ID: str(checkout.customer_id),
    }
    if checkout.subscription_id is not None:
        metadata[METADATA_SUBSCRIPTION_ID] = str(checkout.subscription_id)
    assert checkout.expires_at is not None
    return CheckoutRequest(
        checkout_id=str(checkout.id),
        purpose=checkout.purpose,
        customer=await customer_info(conn, customer, provider.name),
        plan=plan_info(plan, provider.name, checkout.currency, trial_days=checkout.trial_days),
        amount=checkout.amount_due,
        quantity=checkout.quantity,
        expires_at=checkout.expires_at,
        idempotency_key=f"billing-gql-checkout-{checkout.id}",
        success_url=checkout.success_url,
        cancel_url=checkout.cancel_url,
        payment_reference=checkout.payment_reference,
        subscription_id=str(checkout.subscription_id) if checkout.subscription_id else None,
        metadata=metadata,
    )


async def prepare_checkout(runtime: ServiceContext, checkout_id: UUID) -> CheckoutResult:
    """Create the provider session of an OPEN checkout that has none yet, under its row lock.

    Returns the checkout as it then is; a checkout already prepared (or no longer OPEN) is
    returned unchanged, with its stored error when it FAILED. A provider failure marks it
    FAILED with the error's code and text (redacted) and changes nothing else.
    """
    events: list[DomainEvent] = []
    error: UserInputError | None = None
    # Read the clock before taking a connection: the test clock needs one of its own.
    now = await runtime.clock.now()
    async with runtime.db.transaction() as conn:
        row = await conn.fetchrow("SELECT * FROM checkouts WHERE id = $1 FOR UPDATE", checkout_id)
        if row is None:
            raise UserInputError("NOT_FOUND", "no such checkout", ["checkoutId"])
        checkout = checkout_from_row(row)
        if checkout.status != m.OPEN or checkout.prepared_at is not None:
            return CheckoutResult(checkout, stored_error(checkout))
        provider = runtime.providers.get_configured(checkout.provider)
        session: CheckoutSession | None = None
        if provider is None:
            error = UserInputError(
                "PROVIDER_NOT_CONFIGURED", f"provider {checkout.provider!r} is not configured"
            )
        else:
            request = await _request(conn, checkout, provider)
            try:
                session = await provider.create_checkout(request)
            except UserInputError as exc:  # ProviderError, ProviderUnavailable, NotSupported …
                # The provider's field path (e.g. Polar's 422 location) is kept.
                error = UserInputError(exc.code, redact(provider, exc.message), exc.field)
            except Exception as exc:
                log_failure(
                    log,
                    provider,
                    exc,
                    "provider %s failed to create checkout %s",
                    provider.name,
                    checkout.id,
                )
                error = UserInputError("PROVIDER_ERROR", error_text(provider, exc))
        if error is not None:
            row = await mark_checkout_failed(
                conn,
                checkout.id,
                message=error.message,
                code=error.code,
                field=error.field,
                now=now,
            )
            checkout = checkout_from_row(row)
            events.append(checkout_event("checkout.failed", checkout, now))
        else:
            assert session is not None and provider is not None
            row = await record_checkout_session(
                conn,
                checkout.id,
                url=session.url,
                provider_checkout_id=session.provider_checkout_id,
                bank_transfer=_bank_json(session),
                expires_at=session.expires_at,
                now=now,
            )
            checkout = checkout_from_row(row)
            if session.provider_customer_id:
                await remember_provider_customer(
                    conn, checkout.customer_id, provider.name, session.provider_customer_id, now
                )
            events.append(checkout_event("checkout.created", checkout, now))
    for event in events:
        await runtime.emit(event)
    return CheckoutResult(checkout, error)
