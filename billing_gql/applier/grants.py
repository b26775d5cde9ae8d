"""Applying ``GRANT_UPDATED``: the features a provider grants a customer."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from decimal import Decimal

from billing_gql.applier.base import (
    ApplierBase,
    ApplyError,
)
from billing_gql.plugins.types import (
    BillingEvent,
    DomainEvent,
    FeatureGrant,
)

log = logging.getLogger("billing_gql.applier.engine")


class GrantApplier(ApplierBase):
    async def grant_updated(self, ev: BillingEvent) -> None:
        grant = ev.grant
        if grant is None:
            raise ApplyError("grant.updated without a grant")
        customer_id = await self.resolve_customer(
            grant.customer_id or ev.customer_id,
            grant.external_customer_id or ev.external_customer_id,
            grant.provider_customer_id or ev.provider_customer_id,
        )
        if customer_id is None:
            raise ApplyError(f"cannot tell whose {self.provider} grant {grant.grant_id} this is")
        grant_row_id = await self.conn.fetchval(
            "INSERT INTO provider_grants (provider, grant_id, customer_id, benefit_id, "
            "benefit_type, granted, provider_subscription_id, metadata, provider_updated_at, "
            "created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$10) "
            "ON CONFLICT (provider, grant_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, "
            "benefit_id = EXCLUDED.benefit_id, benefit_type = EXCLUDED.benefit_type, "
            "granted = EXCLUDED.granted, provider_subscription_id = "
            "EXCLUDED.provider_subscription_id, metadata = EXCLUDED.metadata, "
            "provider_updated_at = EXCLUDED.provider_updated_at, updated_at = EXCLUDED.updated_at "
            "WHERE provider_grants.provider_updated_at IS NULL "
            "OR provider_grants.provider_updated_at <= EXCLUDED.provider_updated_at RETURNING id",
            self.provider,
            grant.grant_id,
            customer_id,
            grant.benefit_id,
            grant.benefit_type,
            grant.granted,
            grant.provider_subscription_id,
            dict(grant.metadata) or None,
            ev.occurred_at,
            self.now,
        )
        if grant_row_id is None:
            log.info("%s grant %s: an older state, ignored", self.provider, grant.grant_id)
            return
        await self.conn.execute(
            "DELETE FROM provider_grant_features WHERE grant_id = $1", grant_row_id
        )
        features: Sequence[FeatureGrant] = []
        if grant.granted:
            mapped = self.runtime.pm.hook.map_provider_grant(provider=self.provider, grant=grant)
            features = [f for f in (mapped or []) if _valid_feature(f)]
        await self.conn.executemany(
            "INSERT INTO provider_grant_features (grant_id, customer_id, feature, enabled, "
            "limit_value) VALUES ($1,$2,$3,$4,$5)",
            [(grant_row_id, customer_id, f.feature, f.enabled, f.limit) for f in features],
        )
        await self.learn_customer(
            customer_id, grant.provider_customer_id or ev.provider_customer_id
        )
        self.out.append(
            DomainEvent(
                id=str(uuid.uuid4()),
                type="entitlements.updated",
                occurred_at=self.now,
                data={
                    "customer_id": str(customer_id),
                    "provider": self.provider,
                    "grant_id": grant.grant_id,
                    "granted": grant.granted,
                },
            )
        )


def _valid_feature(grant: object) -> bool:
    if not isinstance(grant, FeatureGrant):
        return False
    if not isinstance(grant.feature, str) or not (0 < len(grant.feature) <= 100):
        return False
    return grant.limit is None or (isinstance(grant.limit, Decimal) and grant.limit.is_finite())
