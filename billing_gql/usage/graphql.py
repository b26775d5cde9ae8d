"""Meters' GraphQL face: Meter, meters, createMeter."""

from __future__ import annotations

from enum import StrEnum

import strawberry

from billing_gql.catalog.graphql import refs_from_input
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.graphql.auth import require_admin
from billing_gql.graphql.common import ProviderRef, ProviderRefInput
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import UserError, user_errors
from billing_gql.usage import meters
from billing_gql.usage.models import Meter as MeterModel


@strawberry.enum
class MeterAggregation(StrEnum):
    COUNT = "COUNT"
    SUM = "SUM"
    MAX = "MAX"
    UNIQUE_COUNT = "UNIQUE_COUNT"
    LATEST = "LATEST"


@strawberry.type
class Meter:
    model: strawberry.Private[MeterModel]

    @strawberry.field
    def code(self) -> str:
        return self.model.code

    @strawberry.field
    def name(self) -> str:
        return self.model.name

    @strawberry.field
    def aggregation(self) -> MeterAggregation:
        return MeterAggregation(self.model.aggregation)

    @strawberry.field(description="The event property aggregated; null aggregates `value`.")
    def property(self) -> str | None:
        return self.model.property

    @strawberry.field
    def provider_refs(self) -> list[ProviderRef]:
        return [ProviderRef.of(r) for r in self.model.provider_refs]


@strawberry.input
class CreateMeterInput:
    code: str
    name: str
    aggregation: MeterAggregation
    property: str | None = None
    provider_refs: list[ProviderRefInput] | None = strawberry.field(default_factory=list)


@strawberry.type
class MeterPayload:
    meter: Meter | None
    user_errors: list[UserError]


@strawberry.type
class MeterQuery:
    @strawberry.field(description="Admin. Every meter.")
    async def meters(self, info: Info) -> list[Meter]:
        require_admin(info)
        return [Meter(model=m) for m in await meters.load_meters(info.context.runtime.db.pool)]


@strawberry.type
class MeterMutation:
    @strawberry.mutation(description="Admin. Define a meter that usage events feed.")
    async def create_meter(self, info: Info, input: CreateMeterInput) -> MeterPayload:
        require_admin(info)
        rt = info.context.runtime
        draft = meters.MeterDraft(
            code=input.code,
            name=input.name,
            aggregation=input.aggregation.value,
            property=input.property,
            provider_refs=refs_from_input(input.provider_refs or []),
        )
        try:
            model = await meters.create_meter(rt.db, await rt.clock.now(), draft)
        except (UserInputError, UserInputErrors) as exc:
            return MeterPayload(meter=None, user_errors=user_errors(exc, ["input"]))
        return MeterPayload(meter=Meter(model=model), user_errors=[])
