"""The plugin contract: hook markers and every hook specification.

Plugins implement hooks with ``@hookimpl`` (exported from ``billing_gql``) in a module or class
registered through the ``billing_gql`` entry-point group. Behaviour the core ships but lets
plugins override is itself a plugin (``billing_gql.plugins.defaults``) registered with
``trylast=True``, so any plugin's ``firstresult`` answer wins over it.

Hooks by lifecycle:

- startup: :func:`register_providers`
- checkout: :func:`choose_provider`
- applying provider events: :func:`map_provider_grant`
- after every change: :func:`on_billing_event`
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

import pluggy

from billing_gql.plugins.provider import Provider
from billing_gql.plugins.types import DomainEvent, FeatureGrant, ProviderGrant

__all__ = [
    "choose_provider",
    "hookimpl",
    "hookspec",
    "map_provider_grant",
    "on_billing_event",
    "register_providers",
]

PROJECT = "billing_gql"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_providers() -> Sequence[type[Provider]]:
    """Return the :class:`~billing_gql.Provider` subclasses this plugin contributes.

    Called once at startup. Each class's ``name`` must be unique across all plugins: a second
    provider with the same name stops startup with an error naming both plugins. The core reads
    each provider's settings and instantiates only the configured ones.

    :returns: a sequence of provider classes (empty when the plugin adds none).
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec(firstresult=True)
def choose_provider(
    country: str | None,
    currency: str,
    candidates: Sequence[str],
) -> str | None:
    """Pick the provider for a checkout whose ``createCheckout`` named none.

    :param country: the customer's ISO 3166 country code, upper-case, or ``None``.
    :param currency: the checkout's ISO 4217 currency.
    :param candidates: configured providers able to sell this plan in this currency (they
        support the currency and have the plan's provider reference when they need one), in
        registration order.
    :returns: a provider name from ``candidates``; ``None`` lets the next implementation
        decide. The core's default (``trylast``) applies ``BILLING_GQL_ROUTES``; when no
        implementation picks one, ``createCheckout`` answers ``NO_PROVIDER``.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def map_provider_grant(provider: str, grant: ProviderGrant) -> Sequence[FeatureGrant] | None:
    """Map a provider-side benefit (e.g. a Polar benefit) to billing-gql features.

    Called when a ``grant.updated`` event is applied.

    :param provider: the provider's name.
    :param grant: the benefit grant as the provider reported it.
    :returns: the features it grants (an empty sequence: none); ``None`` lets the next
        implementation decide. The core's default (``trylast``) reads ``metadata.feature`` and
        the optional ``metadata.limit`` of the benefit.
    """
    raise NotImplementedError


@hookspec
def on_billing_event(event: DomainEvent) -> Awaitable[None] | None:
    """Observe a change (checkout completed, subscription updated …) after it is committed.

    :param event: the domain event.
    :returns: ``None``, or an awaitable the core awaits. Exceptions are logged and swallowed:
        an observer never undoes or blocks billing.
    """
    raise NotImplementedError
