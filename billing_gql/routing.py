"""Choosing a provider for a checkout, and describing our objects to a provider plugin."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from uuid import UUID

import asyncpg

from billing_gql.context import ServiceContext
from billing_gql.core.catalog import Plan, ref_for
from billing_gql.core.customers import Customer
from billing_gql.errors import UserInputError
from billing_gql.money import shown
from billing_gql.plugins.http import redact_secrets
from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import (
    BillingInterval,
    CustomerInfo,
    PlanInfo,
    ProviderCapability,
    UsageChargeInfo,
)

__all__ = [
    "can_sell",
    "choose_provider",
    "customer_info",
    "customer_info_of",
    "error_text",
    "log_failure",
    "plan_info",
    "provider_customer_id",
    "provider_customer_ids",
    "redact",
    "require_provider",
    "usage_problem",
]


def can_sell(cls: type[Provider], plan: Plan, currency: str) -> str | None:
    """Why ``cls`` cannot sell ``plan`` in ``currency`` (a userErrors code), else ``None``."""
    if cls.currencies is not None and currency not in {c.upper() for c in cls.currencies}:
        return "UNSUPPORTED_CURRENCY"
    if cls.needs_provider_ref and plan.provider_ref(cls.name, currency) is None:
        return "PROVIDER_REF_MISSING"
    problem = usage_problem(cls, plan, currency)
    return problem[0] if problem else None


def usage_problem(cls: type[Provider], plan: Plan, currency: str) -> tuple[str, str] | None:
    """Why ``cls`` cannot bill ``plan``'s usage charges in ``currency`` — a userErrors code and
    a message naming the charge —, else ``None``.

    Push providers (``charges_renewals = False``) need nothing: the core invoices usage
    itself. A provider that renews subscriptions bills their usage too: it must take usage
    (``report_usage``), each charged meter needs its reference there (else the usage never
    reaches it), and with ``usage_charge_refs`` each charge its own (a metered price).
    """
    if not cls.charges_renewals:
        return None
    for charge in plan.charges:
        if charge.currency != currency:
            continue
        named = f"plan {shown(plan.code)}: the usage charge on meter {shown(charge.meter_code)}"
        if ProviderCapability.USAGE not in cls.capabilities():
            return "NOT_SUPPORTED", f"{named} cannot be billed: {cls.name} does not bill usage"
        if ref_for(charge.meter_refs, cls.name, currency) is None:
            return (
                "PROVIDER_REF_MISSING",
                f"{named} cannot be billed: meter {shown(charge.meter_code)} has no {cls.name} "
                "reference, so its usage never reaches it",
            )
        if cls.usage_charge_refs and charge.provider_ref(cls.name, currency) is None:
            return (
                "PROVIDER_REF_MISSING",
                f"{named} has no {cls.name} reference (a metered price) for {currency}",
            )
    return None


def require_provider(runtime: ServiceContext, name: str) -> Provider:
    """The configured provider ``name``, else ``PROVIDER_NOT_CONFIGURED`` (at ``provider``)."""
    instance = runtime.providers.get_configured(name.strip().lower())
    if instance is None:
        raise UserInputError(
            "PROVIDER_NOT_CONFIGURED",
            f"provider {shown(name)} is not installed or configured",
            ["provider"],
        )
    return instance


def choose_provider(
    runtime: ServiceContext, plan: Plan, currency: str, country: str | None, explicit: str | None
) -> Provider:
    """The provider of a new checkout: the one named, or the ``choose_provider`` hook's pick
    among the configured providers able to sell ``plan`` in ``currency``."""
    if explicit is not None:
        instance = require_provider(runtime, explicit)
        cls = type(instance)
        if can_sell(cls, plan, currency) == "UNSUPPORTED_CURRENCY":
            raise UserInputError(
                "UNSUPPORTED_CURRENCY", f"{instance.name} cannot charge in {currency}", ["currency"]
            )
        if cls.needs_provider_ref and plan.provider_ref(instance.name, currency) is None:
            raise UserInputError(
                "PROVIDER_REF_MISSING",
                f"plan {shown(plan.code)} has no {instance.name} reference for {currency}",
                ["planCode"],
            )
        problem = usage_problem(cls, plan, currency)
        if problem is not None:
            raise UserInputError(problem[0], problem[1], ["planCode"])
        return instance
    candidates = [
        p.name for p in runtime.providers.configured() if can_sell(type(p), plan, currency) is None
    ]
    chosen = None
    if candidates:
        chosen = runtime.pm.hook.choose_provider(
            country=country, currency=currency, candidates=list(candidates)
        )
    if not isinstance(chosen, str) or chosen not in candidates:
        raise UserInputError(
            "NO_PROVIDER",
            f"no configured provider routes this checkout (country {country or 'unknown'}, "
            f"{currency}); name one in 'provider' or set BILLING_GQL_ROUTES",
            ["provider"],
        )
    picked = runtime.providers.get_configured(chosen)
    assert picked is not None
    return picked


async def provider_customer_id(
    conn: asyncpg.Connection | asyncpg.Pool, customer_id: UUID, provider: str
) -> str | None:
    """The provider's id for our customer, once a checkout or an event revealed it."""
    value = await conn.fetchval(
        "SELECT provider_customer_id FROM customer_provider_accounts "
        "WHERE customer_id = $1 AND provider = $2",
        customer_id,
        provider,
    )
    return value if isinstance(value, str) else None


async def customer_info(
    conn: asyncpg.Connection | asyncpg.Pool, customer: Customer, provider: str
) -> CustomerInfo:
    """``customer`` as ``provider`` sees it (with its id there, once known)."""
    return customer_info_of(customer, await provider_customer_id(conn, customer.id, provider))


def customer_info_of(customer: Customer, provider_customer_id: str | None) -> CustomerInfo:
    """``customer`` as a provider sees it, its id there given (looked up one at a time by
    :func:`customer_info`, for many at once by :func:`provider_customer_ids`)."""
    return CustomerInfo(
        id=str(customer.id),
        external_id=customer.external_id,
        email=customer.email,
        name=customer.name,
        country=customer.country,
        provider_customer_id=provider_customer_id,
    )


async def provider_customer_ids(
    conn: asyncpg.Connection | asyncpg.Pool, pairs: Sequence[tuple[UUID, str]]
) -> dict[tuple[UUID, str], str]:
    """The provider's id of each (customer, provider) that has one, in one statement."""
    if not pairs:
        return {}
    rows = await conn.fetch(
        "SELECT a.customer_id, a.provider, a.provider_customer_id "
        "FROM customer_provider_accounts a "
        "JOIN unnest($1::uuid[], $2::text[]) AS p(customer_id, provider) "
        "ON a.customer_id = p.customer_id AND a.provider = p.provider",
        [c for c, _ in pairs],
        [p for _, p in pairs],
    )
    return {(r["customer_id"], r["provider"]): r["provider_customer_id"] for r in rows}


def plan_info(
    plan: Plan, provider: str, currency: str, *, trial_days: int | None = None
) -> PlanInfo:
    """What a provider is told of ``plan``; ``trial_days``: the trial a checkout grants (the
    plan's when not given; 0 for a customer who had the plan's trial before)."""
    return PlanInfo(
        id=str(plan.id),
        code=plan.code,
        name=plan.name,
        interval=BillingInterval(plan.interval),
        interval_count=plan.interval_count,
        trial_days=plan.trial_days if trial_days is None else trial_days,
        provider_ref=plan.provider_ref(provider, currency),
        usage_charges=tuple(
            UsageChargeInfo(
                meter_code=c.meter_code,
                meter_ref=ref_for(c.meter_refs, provider, currency),
                provider_ref=c.provider_ref(provider, currency),
            )
            for c in plan.charges
            if c.currency == currency
        ),
    )


def redact(provider: Provider | None, text: str, limit: int = 1000) -> str:
    """``text`` with the provider's secret settings (and anything shaped like a known secret)
    blanked out by :func:`~billing_gql.plugins.http.redact_secrets`, cut to ``limit`` characters.

    Error texts are stored and shown to admins; a plugin's exception must never leak its keys.
    """
    secrets = (
        [provider.settings.get(name) for name in type(provider).secret_settings]
        if provider is not None
        else []
    )
    text = redact_secrets(text, secrets, keep_kind=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(provider: Provider | None, exc: BaseException) -> str:
    """A storable description of an unexpected exception (type and message, redacted)."""
    message = str(exc).strip()
    kind = type(exc).__name__
    return redact(provider, f"{kind}: {message}" if message else kind)


def log_failure(
    logger: logging.Logger,
    provider: Provider | None,
    exc: BaseException,
    message: str,
    *args: object,
    level: int = logging.ERROR,
) -> None:
    """Log an unexpected plugin failure with its traceback, the provider's secrets blanked out.

    ``logger.exception`` would print the exception's own text unredacted, and a plugin's
    exception may carry its key (an URL with ``?key=…``, an echoed header).
    """
    trace = "".join(traceback.format_exception(exc)).rstrip("\n")
    logger.log(level, message + "\n%s", *args, redact(provider, trace, limit=20_000))
