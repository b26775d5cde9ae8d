"""Core behaviour that plugins may override, registered as a plugin with ``trylast=True``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from billing_gql.plugins.hookspecs import hookimpl
from billing_gql.plugins.types import FeatureGrant, ProviderGrant
from billing_gql.settings import Route

log = logging.getLogger(__name__)


class CoreDefaults:
    """Routing by ``BILLING_GQL_ROUTES`` and benefit mapping by ``metadata.feature``."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    @hookimpl(trylast=True)
    def choose_provider(
        self, country: str | None, currency: str, candidates: Sequence[str]
    ) -> str | None:
        """The first route whose country matches (or is ``*``) and whose provider can sell."""
        for route in self.routes:
            if route.country in {"*", (country or "").upper()} and route.provider in candidates:
                return route.provider
        return None

    @hookimpl(trylast=True)
    def map_provider_grant(
        self, provider: str, grant: ProviderGrant
    ) -> Sequence[FeatureGrant] | None:
        """``metadata.feature`` names one of our features; ``metadata.limit`` its limit.

        A limit that is there but unreadable (not a number, negative, a boolean) grants
        nothing: read as "no limit" it would be unlimited, and an unlimited grant wins over
        every other limit of the customer's.
        """
        feature = grant.metadata.get("feature")
        if not isinstance(feature, str) or not feature.strip():
            return []
        raw_limit = grant.metadata.get("limit")
        limit: Decimal | None = None
        if raw_limit is not None:
            try:
                limit = None if isinstance(raw_limit, bool) else Decimal(str(raw_limit).strip())
            except InvalidOperation:
                limit = None
            if limit is None or not limit.is_finite() or limit < 0:
                log.warning(
                    "%s grant %s: metadata.limit %r is not a non-negative number; "
                    "feature %r not granted",
                    provider,
                    grant.grant_id,
                    raw_limit,
                    feature,
                )
                return []
        return [FeatureGrant(feature=feature.strip(), enabled=True, limit=limit)]
