"""The provider session of a checkout: :func:`prepare_checkout` creates it under the checkout's
row lock, once, with a stable idempotency key (see :mod:`billing_gql.checkout.service`)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from billing_gql.catalog.service import load_plans
from billing_gql.context import ServiceContext
from billing_gql.core import checkout as m
from billing_gql.core.checkout import Checkout, checkout_from_row
from billing_gql.core.events import checkout_event
from billing_gql.crashpoints import crashpoint
from billing_gql.customers.service import load_customers
from billing_gql.errors import UserInputError
from billing_gql.money import shown
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
from billing_gql.store.checkouts_sql import (
    claim_checkout_session,
    mark_checkout_failed,
    record_checkout_session,
)
from billing_gql.store.customers_sql import remember_provider_customer

__all__ = ["CLAIM_LEASE_SECONDS", "CheckoutResult", "prepare_checkout", "stored_error"]

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


CLAIM_LEASE_SECONDS = 300.0
"""How long (wall time) a claim on a checkout's provider session holds: longer than any
provider call with its retries. A claim older than this was left by a process that died
between the claim and the result; a retry takes it over."""

CLAIM_WAIT_SECONDS = 30.0
"""How long a concurrent duplicate (the same checkout) waits for the claimant's result before
answering ``CHECKOUT_IN_PROGRESS``."""

_POLL_SECONDS = 0.2


async def prepare_checkout(runtime: ServiceContext, checkout_id: UUID) -> CheckoutResult:
    """Create the provider session of an OPEN checkout that has none yet, exactly once.

    The creation is claimed in the checkout's row (committed), the provider is called with no
    transaction or connection held, and the result is written after, while the claim holds.
    A concurrent caller waits (polling, without a connection) for the claimant's result; a
    claim left by a dead process is taken over once its lease ran out.

    Returns the checkout as it then is; a checkout already prepared (or no longer OPEN) is
    returned unchanged, with its stored error when it FAILED. A provider failure marks it
    FAILED with the error's code and text (redacted) and changes nothing else.

    :raises UserInputError: NOT_FOUND; CHECKOUT_IN_PROGRESS when another request is still
        creating the session after :data:`CLAIM_WAIT_SECONDS`.
    """
    # Read the clock before taking a connection: the test clock needs one of its own.
    now = await runtime.clock.now()
    claim = uuid4()
    deadline = time.monotonic() + CLAIM_WAIT_SECONDS
    while True:
        claimed = await _claim(runtime, checkout_id, claim)
        if isinstance(claimed, CheckoutResult):
            return claimed
        if claimed is not None:
            break
        if time.monotonic() >= deadline:
            raise UserInputError(
                "CHECKOUT_IN_PROGRESS",
                "the provider session of this checkout is still being created; retry shortly "
                "with the same idempotencyKey",
            )
        await asyncio.sleep(_POLL_SECONDS)
    checkout, provider, request = claimed
    crashpoint("checkout.claimed")
    answer = await _call_provider(checkout, provider, request)
    return await _settle(runtime, checkout, provider, claim, answer, now=now)


_Claimed = tuple[Checkout, Provider | None, CheckoutRequest | None]


async def _claim(
    runtime: ServiceContext, checkout_id: UUID, claim: UUID
) -> CheckoutResult | _Claimed | None:
    """Claim the session's creation (one short transaction): the checkout, its provider and
    the request to send; a final result when there is nothing to create; ``None`` while
    another live claim holds it."""
    async with runtime.db.transaction() as conn:
        row = await claim_checkout_session(conn, checkout_id, claim, CLAIM_LEASE_SECONDS)
        if row is None:
            row = await conn.fetchrow("SELECT * FROM checkouts WHERE id = $1", checkout_id)
            if row is None:
                raise UserInputError("NOT_FOUND", "no such checkout", ["checkoutId"])
            checkout = checkout_from_row(row)
            if checkout.status != m.OPEN or checkout.prepared_at is not None:
                return CheckoutResult(checkout, stored_error(checkout))
            return None
        checkout = checkout_from_row(row)
        provider = runtime.providers.get_configured(checkout.provider)
        request = await _request(conn, checkout, provider) if provider is not None else None
        return checkout, provider, request


async def _call_provider(
    checkout: Checkout, provider: Provider | None, request: CheckoutRequest | None
) -> tuple[CheckoutSession | None, UserInputError | None]:
    """The plugin's ``create_checkout``, outside any transaction: its session or the error."""
    if provider is None or request is None:
        return None, UserInputError(
            "PROVIDER_NOT_CONFIGURED", f"provider {shown(checkout.provider)} is not configured"
        )
    try:
        return await provider.create_checkout(request), None
    except UserInputError as exc:  # ProviderError, ProviderUnavailable, NotSupported …
        # The provider's field path (e.g. Polar's 422 location) is kept.
        return None, UserInputError(exc.code, redact(provider, exc.message), exc.field)
    except Exception as exc:
        log_failure(
            log,
            provider,
            exc,
            "provider %s failed to create checkout %s",
            provider.name,
            checkout.id,
        )
        return None, UserInputError("PROVIDER_ERROR", error_text(provider, exc))


async def _settle(
    runtime: ServiceContext,
    checkout: Checkout,
    provider: Provider | None,
    claim: UUID,
    answer: tuple[CheckoutSession | None, UserInputError | None],
    *,
    now: datetime,
) -> CheckoutResult:
    """Write the provider's answer while our claim holds (else the row as it is: a webhook
    or a claimant that took over settled it), and emit its event once committed."""
    session, error = answer
    events: list[DomainEvent] = []
    async with runtime.db.transaction() as conn:
        if error is not None:
            row = await mark_checkout_failed(
                conn,
                checkout.id,
                message=error.message,
                code=error.code,
                field=error.field,
                now=now,
                claim=claim,
            )
            if row is not None:
                events.append(checkout_event("checkout.failed", checkout_from_row(row), now))
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
                claim=claim,
            )
            if row is not None:
                if session.provider_customer_id:
                    await remember_provider_customer(
                        conn, checkout.customer_id, provider.name, session.provider_customer_id, now
                    )
                events.append(checkout_event("checkout.created", checkout_from_row(row), now))
        if row is None:
            row = await conn.fetchrow("SELECT * FROM checkouts WHERE id = $1", checkout.id)
            current = checkout_from_row(row)
            return CheckoutResult(current, stored_error(current))
    for event in events:
        await runtime.emit(event)
    return CheckoutResult(checkout_from_row(row), error)
