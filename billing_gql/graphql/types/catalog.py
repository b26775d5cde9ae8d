"""The catalog's GraphQL face: Plan and its parts, plans/plan, createPlan/updatePlan/archivePlan."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

import strawberry

from billing_gql.catalog import service
from billing_gql.core.catalog import Charge as ChargeModelValue
from billing_gql.core.catalog import Plan as PlanModel
from billing_gql.core.catalog import ProviderRef as ProviderRefModel
from billing_gql.core.scopes import PUBLIC, Scope
from billing_gql.customers.service import parse_uuid
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.graphql import typed
from billing_gql.graphql.auth import require_admin, require_public
from billing_gql.graphql.common import Money, ProviderRef, ProviderRefInput
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import UserError, user_errors
from billing_gql.plugins.types import BillingInterval as BillingIntervalValue
from billing_gql.validation import OMITTED

BillingInterval = strawberry.enum(BillingIntervalValue, name="BillingInterval")


@strawberry.enum
class ChargeModel(StrEnum):
    PER_UNIT = "PER_UNIT"
    GRADUATED = "GRADUATED"
    VOLUME = "VOLUME"
    PACKAGE = "PACKAGE"


@strawberry.type
class PlanFeature:
    feature: str
    enabled: bool
    limit: Decimal | None = strawberry.field(description="null = unlimited")


@strawberry.type
class Tier:
    up_to: Decimal | None = strawberry.field(description="Inclusive; null = the rest.")
    unit_amount: Decimal
    flat_amount: Decimal


@strawberry.type
class UsageCharge:
    meter: str
    model: ChargeModel
    currency: str
    unit_amount: Decimal | None
    tiers: list[Tier] | None
    package_size: int | None
    included_quantity: Decimal
    refs: strawberry.Private[tuple[ProviderRefModel, ...]] = ()

    @typed.field(
        description="Admin only (empty for anyone else): the charge's references at providers "
        "that bill usage per charge, e.g. a Stripe metered price (price_…) on the Stripe meter "
        "its meter's own reference names."
    )
    def provider_refs(self, info: Info) -> list[ProviderRef]:
        if not info.context.viewer.is_admin:
            return []
        return [ProviderRef.of(r) for r in self.refs]

    @classmethod
    def of(cls, c: ChargeModelValue) -> UsageCharge:
        return cls(
            meter=c.meter_code,
            model=ChargeModel(c.model),
            currency=c.currency,
            unit_amount=c.unit_amount,
            tiers=[
                Tier(up_to=t.up_to, unit_amount=t.unit_amount, flat_amount=t.flat_amount)
                for t in c.tiers
            ]
            if c.tiers is not None
            else None,
            package_size=c.package_size,
            included_quantity=c.included_quantity,
            refs=c.provider_refs,
        )


@strawberry.type
class Plan:
    model: strawberry.Private[PlanModel]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.id))

    @strawberry.field
    def code(self) -> str:
        return self.model.code

    @strawberry.field
    def name(self) -> str:
        return self.model.name

    @strawberry.field
    def description(self) -> str | None:
        return self.model.description

    @strawberry.field
    def interval(self) -> BillingInterval:  # type: ignore[valid-type]
        return BillingIntervalValue(self.model.interval)

    @strawberry.field
    def interval_count(self) -> int:
        return self.model.interval_count

    @strawberry.field
    def trial_days(self) -> int:
        return self.model.trial_days

    @strawberry.field
    def prices(self) -> list[Money]:
        return [Money.of(p) for p in self.model.prices]

    @strawberry.field
    def features(self) -> list[PlanFeature]:
        return [
            PlanFeature(feature=f.feature, enabled=f.enabled, limit=f.limit)
            for f in self.model.features
        ]

    @strawberry.field
    def charges(self) -> list[UsageCharge]:
        return [UsageCharge.of(c) for c in self.model.charges]

    @typed.field(description="Admin only: empty for anyone else.")
    def provider_refs(self, info: Info) -> list[ProviderRef]:
        if not info.context.viewer.is_admin:
            return []
        return [ProviderRef.of(r) for r in self.model.provider_refs]

    @strawberry.field
    def archived(self) -> bool:
        return self.model.archived

    @typed.field(
        description="Not listed publicly; sold only through an admin's checkout or to "
        "customers granted access (grantPlanAccess)."
    )
    def private(self) -> bool:
        return self.model.private


@strawberry.input
class PriceInput:
    currency: str
    amount: Decimal


@strawberry.input
class PlanFeatureInput:
    feature: str
    enabled: bool | None = True
    limit: Decimal | None = strawberry.field(default=None, description="null = unlimited")


@strawberry.input
class TierInput:
    up_to: Decimal | None = strawberry.field(description="Inclusive; null = the rest.")
    unit_amount: Decimal
    flat_amount: Decimal | None = Decimal("0")


@strawberry.input
class UsageChargeInput:
    meter: str
    model: ChargeModel
    currency: str
    unit_amount: Decimal | None = None
    tiers: list[TierInput] | None = None
    package_size: int | None = None
    included_quantity: Decimal | None = Decimal("0")
    provider_refs: list[ProviderRefInput] | None = strawberry.field(
        default_factory=list,
        description="References at providers that bill usage per charge: for Stripe, the "
        "metered price (price_…) on the Stripe meter this meter's reference names. A Stripe "
        "checkout of a plan with a charge lacking one answers PROVIDER_REF_MISSING.",
    )


@strawberry.input
class CreatePlanInput:
    code: str
    name: str
    interval: BillingInterval  # type: ignore[valid-type]
    prices: list[PriceInput]
    description: str | None = None
    interval_count: int | None = 1
    trial_days: int | None = 0
    features: list[PlanFeatureInput] | None = strawberry.field(default_factory=list)
    charges: list[UsageChargeInput] | None = strawberry.field(default_factory=list)
    provider_refs: list[ProviderRefInput] | None = strawberry.field(default_factory=list)
    private: bool | None = strawberry.field(
        default=False, description="Not listed publicly; see Plan.private."
    )


@strawberry.input(description="Omitted fields keep their value; lists are replaced whole.")
class UpdatePlanInput:
    code: str
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    features: list[PlanFeatureInput] | None = strawberry.UNSET
    provider_refs: list[ProviderRefInput] | None = strawberry.UNSET
    trial_days: int | None = strawberry.UNSET
    prices: list[PriceInput] | None = strawberry.field(
        default=strawberry.UNSET, description="Only while nobody subscribed."
    )
    interval: BillingInterval | None = strawberry.field(  # type: ignore[valid-type]
        default=strawberry.UNSET, description="Only while nobody subscribed."
    )
    interval_count: int | None = strawberry.field(
        default=strawberry.UNSET, description="Only while nobody subscribed."
    )
    charges: list[UsageChargeInput] | None = strawberry.field(
        default=strawberry.UNSET, description="Only while nobody subscribed."
    )
    private: bool | None = strawberry.UNSET


@strawberry.type
class PlanPayload:
    plan: Plan | None
    user_errors: list[UserError]


def _prices(items: list[PriceInput]) -> list[service.PriceDraft]:
    return [service.PriceDraft(p.currency, p.amount) for p in items]


def _features(items: list[PlanFeatureInput]) -> list[service.FeatureDraft]:
    return [service.FeatureDraft(f.feature, f.enabled is not False, f.limit) for f in items]


def _charges(items: list[UsageChargeInput]) -> list[service.ChargeDraft]:
    return [
        service.ChargeDraft(
            meter=c.meter,
            model=c.model.value,
            currency=c.currency,
            unit_amount=c.unit_amount,
            tiers=[service.TierDraft(t.up_to, t.unit_amount, t.flat_amount) for t in c.tiers]
            if c.tiers is not None
            else None,
            package_size=c.package_size,
            included_quantity=c.included_quantity,
            provider_refs=refs_from_input(c.provider_refs or []),
        )
        for c in items
    ]


def refs_from_input(items: list[ProviderRefInput]) -> list[service.ProviderRefDraft]:
    return [service.ProviderRefDraft(r.provider, r.ref, r.currency) for r in items]


def _given(value: object) -> bool:
    return value is not strawberry.UNSET


# UpdatePlanInput fields that may be omitted but not null: attribute → its GraphQL name.
_NOT_NULLABLE = {
    "name": "name",
    "features": "features",
    "provider_refs": "providerRefs",
    "trial_days": "trialDays",
    "prices": "prices",
    "interval": "interval",
    "interval_count": "intervalCount",
    "charges": "charges",
    "private": "private",
}


def _not_null(input: UpdatePlanInput) -> None:
    """Every explicit null among fields that cannot be cleared, at its camelCase path."""
    problems = [
        UserInputError("INVALID_INPUT", f"{name} cannot be null", [name])
        for attribute, name in _NOT_NULLABLE.items()
        if getattr(input, attribute) is None
    ]
    if problems:
        raise UserInputErrors(problems)


@strawberry.type
class CatalogQuery:
    @typed.field(
        scope=PUBLIC,
        description="Public. Plans for sale: private ones only to admins and to customers "
        "granted access; archived ones on request, to admins only.",
    )
    async def plans(self, info: Info, include_archived: bool | None = False) -> list[Plan]:
        viewer = require_public(info)
        models = await service.list_plans(
            info.context.runtime.db,
            include_archived=bool(include_archived) and viewer.is_admin,
            include_private=viewer.is_admin,
            customer_id=viewer.customer_id,
        )
        return [Plan(model=m) for m in models]

    @typed.field(
        scope=PUBLIC,
        description="Public. One plan by code; archived and private ones (but private ones "
        "a customer was granted) to admins only.",
    )
    async def plan(self, info: Info, code: str) -> Plan | None:
        viewer = require_public(info)
        model = await service.get_plan(
            info.context.runtime.db,
            code,
            include_hidden=viewer.is_admin,
            customer_id=viewer.customer_id,
        )
        return Plan(model=model) if model else None


@strawberry.type
class CatalogMutation:
    @typed.mutation(scope=Scope.ADMIN, description="Admin. Define a plan.")
    async def create_plan(self, info: Info, input: CreatePlanInput) -> PlanPayload:
        require_admin(info)
        rt = info.context.runtime
        draft = service.PlanDraft(
            code=input.code,
            name=input.name,
            description=input.description,
            interval=BillingIntervalValue(input.interval).value,
            interval_count=input.interval_count if input.interval_count is not None else 1,
            trial_days=input.trial_days if input.trial_days is not None else 0,
            prices=_prices(input.prices),
            features=_features(input.features or []),
            charges=_charges(input.charges or []),
            provider_refs=refs_from_input(input.provider_refs or []),
            private=bool(input.private),
        )
        try:
            model = await service.create_plan(rt.db, await rt.clock.now(), draft)
        except (UserInputError, UserInputErrors) as exc:
            return PlanPayload(plan=None, user_errors=user_errors(exc, ["input"]))
        return PlanPayload(plan=Plan(model=model), user_errors=[])

    @typed.mutation(scope=Scope.ADMIN, description="Admin. Change a plan (see UpdatePlanInput).")
    async def update_plan(self, info: Info, input: UpdatePlanInput) -> PlanPayload:
        require_admin(info)
        rt = info.context.runtime
        try:
            _not_null(input)
            changes = service.PlanChanges(
                code=input.code,
                name=input.name if _given(input.name) else OMITTED,  # type: ignore[arg-type]
                description=input.description if _given(input.description) else OMITTED,
                features=_features(input.features)  # type: ignore[arg-type]
                if _given(input.features)
                else OMITTED,
                provider_refs=refs_from_input(input.provider_refs)  # type: ignore[arg-type]
                if _given(input.provider_refs)
                else OMITTED,
                trial_days=input.trial_days  # type: ignore[arg-type]
                if _given(input.trial_days)
                else OMITTED,
                prices=_prices(input.prices)  # type: ignore[arg-type]
                if _given(input.prices)
                else OMITTED,
                interval=BillingIntervalValue(input.interval).value  # type: ignore[arg-type]
                if _given(input.interval)
                else OMITTED,
                interval_count=input.interval_count  # type: ignore[arg-type]
                if _given(input.interval_count)
                else OMITTED,
                charges=_charges(input.charges)  # type: ignore[arg-type]
                if _given(input.charges)
                else OMITTED,
                private=bool(input.private) if _given(input.private) else OMITTED,
            )
            model = await service.update_plan(rt.db, await rt.clock.now(), changes)
        except (UserInputError, UserInputErrors) as exc:
            return PlanPayload(plan=None, user_errors=user_errors(exc, ["input"]))
        return PlanPayload(plan=Plan(model=model), user_errors=[])

    @typed.mutation(
        scope=Scope.ADMIN, description="Admin. Stop selling a plan; subscribers keep it."
    )
    async def archive_plan(self, info: Info, code: str) -> PlanPayload:
        require_admin(info)
        rt = info.context.runtime
        try:
            model = await service.archive_plan(rt.db, await rt.clock.now(), code)
        except UserInputError as exc:
            return PlanPayload(plan=None, user_errors=user_errors(exc))
        return PlanPayload(plan=Plan(model=model), user_errors=[])

    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin. Let a customer buy a private plan (createCheckout with its "
        "session token). Idempotent.",
    )
    async def grant_plan_access(
        self, info: Info, plan_code: str, customer_id: strawberry.ID
    ) -> PlanPayload:
        return await _plan_access(info, plan_code, customer_id, granted=True)

    @typed.mutation(
        scope=Scope.ADMIN,
        description="Admin. Withdraw grantPlanAccess (subscriptions already made stay). "
        "Idempotent.",
    )
    async def revoke_plan_access(
        self, info: Info, plan_code: str, customer_id: strawberry.ID
    ) -> PlanPayload:
        return await _plan_access(info, plan_code, customer_id, granted=False)


async def _plan_access(
    info: Info, plan_code: str, customer_id: strawberry.ID, *, granted: bool
) -> PlanPayload:
    require_admin(info)
    rt = info.context.runtime
    try:
        model = await service.set_plan_access(
            rt.db, await rt.clock.now(), plan_code, parse_uuid(customer_id), granted=granted
        )
    except (UserInputError, UserInputErrors) as exc:
        return PlanPayload(plan=None, user_errors=user_errors(exc))
    return PlanPayload(plan=Plan(model=model), user_errors=[])
