"""The ``providers`` query: what loaded, whether it is configured, what it can do."""

from __future__ import annotations

import strawberry

from billing_gql.core.scopes import PUBLIC
from billing_gql.graphql import typed
from billing_gql.graphql.auth import require_public
from billing_gql.graphql.context import Info
from billing_gql.plugins.types import ProviderCapability as ProviderCapabilityValue

ProviderCapability = strawberry.enum(
    ProviderCapabilityValue, name="ProviderCapability", graphql_name_from="value"
)


@strawberry.type
class Provider:
    name: str
    display_name: str
    configured: bool
    currencies: list[str] = strawberry.field(description="Empty: any currency.")
    capabilities: list[ProviderCapability]  # type: ignore[valid-type]


@strawberry.type
class ProviderQuery:
    @typed.field(scope=PUBLIC, description="Public. Installed providers.")
    def providers(self, info: Info) -> list[Provider]:
        require_public(info)
        out = []
        for entry in info.context.runtime.providers.values():
            out.append(
                Provider(
                    name=entry.name,
                    display_name=entry.display_name,
                    configured=entry.configured,
                    currencies=list(entry.cls.currencies or ()),
                    capabilities=sorted(entry.capabilities),
                )
            )
        return out
