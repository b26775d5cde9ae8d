"""Usage's GraphQL face: meters, recordUsage, usage, invoicePreview.

``recordUsage`` also has a bulk path that skips GraphQL's per-event input coercion
(:mod:`billing_gql.graphql.fast.usage`); both paths call the same service.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from billing_gql.core.invoices import InvoiceLineKind as InvoiceLineKindValue
from billing_gql.core.scopes import Scope
from billing_gql.core.usage import InvoiceLine as InvoiceLineModel
from billing_gql.core.usage import InvoicePreview as InvoicePreviewModel
from billing_gql.core.usage import Meter as MeterModel
from billing_gql.core.usage import RecordUsageResult
from billing_gql.customers.service import parse_uuid
from billing_gql.errors import UserInputError, UserInputErrors
from billing_gql.graphql import typed
from billing_gql.graphql.auth import require_admin, require_customer, require_viewer
from billing_gql.graphql.common import Money, ProviderRef, ProviderRefInput
from billing_gql.graphql.context import Info
from billing_gql.graphql.errors import (
    ApiError,
    GraphQLErrorCode,
    InvalidInput,
    NotFound,
    UserError,
    user_errors,
)
from billing_gql.graphql.types.catalog import refs_from_input
from billing_gql.graphql.types.customers import resolve_customer_id
from billing_gql.metering.ingest import record_usage
from billing_gql.usage import meters
from billing_gql.usage.aggregate import aggregate, current_period
from billing_gql.usage.invoice import invoice_preview, load_subscription_head

RECORD_USAGE_RESULT = "recordUsage"
"""Key of ``Context.precomputed`` under which the bulk path leaves ``recordUsage``'s payload."""


class UnknownMeter(ApiError):
    code = GraphQLErrorCode.UNKNOWN_METER


class UnknownCustomer(ApiError):
    code = GraphQLErrorCode.UNKNOWN_CUSTOMER


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

    @typed.field(description="The event property aggregated; null aggregates `value`.")
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
    @typed.field(scope=Scope.READ, description="Admin. Every meter.")
    async def meters(self, info: Info) -> list[Meter]:
        require_admin(info)
        return [Meter(model=m) for m in await meters.load_meters(info.context.runtime.db.pool)]


@strawberry.type
class MeterMutation:
    @typed.mutation(scope=Scope.ADMIN, description="Admin. Define a meter that usage events feed.")
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


@strawberry.input
class UsageEventInput:
    id: str = strawberry.field(description="Your id for the event: a repeat is not counted twice.")
    customer_id: strawberry.ID | None = None
    external_customer_id: str | None = None
    meter: str
    timestamp: datetime | None = strawberry.field(
        default=None, description="When it happened (default: now). At most 5 minutes ahead."
    )
    value: Decimal | None = Decimal("1")
    properties: JSON | None = None


@strawberry.input
class RecordUsageInput:
    events: list[UsageEventInput] = strawberry.field(description="At most 1000.")


@strawberry.type
class RecordUsagePayload:
    accepted: int = strawberry.field(description="Events stored by this call.")
    duplicates: int = strawberry.field(
        description="Events whose id was already recorded (or repeated within this call)."
    )
    user_errors: list[UserError]

    @classmethod
    def of(cls, result: RecordUsageResult) -> RecordUsagePayload:
        return cls(accepted=result.accepted, duplicates=result.duplicates, user_errors=[])

    @classmethod
    def failed(cls, exc: UserInputError | UserInputErrors) -> RecordUsagePayload:
        return cls(accepted=0, duplicates=0, user_errors=user_errors(exc, ["input"]))


@strawberry.type
class UsageSummary:
    meter: str
    value: Decimal
    from_: datetime = strawberry.field(name="from", description="Inclusive.")
    to: datetime = strawberry.field(description="Exclusive.")


InvoiceLineKind = strawberry.enum(InvoiceLineKindValue, name="InvoiceLineKind")


@strawberry.type(description="A line of an invoice or of invoicePreview.")
class InvoiceLine:
    description: str
    kind: InvoiceLineKind  # type: ignore[valid-type]
    quantity: Decimal
    unit_amount: Money | None = strawberry.field(
        description="The price of one unit, when the line has one (null for tiered charges, "
        "unit prices finer than the currency's minor unit, and lump sums)."
    )
    amount: Money
    period_start: datetime | None
    period_end: datetime | None

    @classmethod
    def of(cls, line: InvoiceLineModel) -> InvoiceLine:
        currency = line.amount.currency
        return cls(
            description=line.description,
            kind=InvoiceLineKindValue(line.kind),
            quantity=line.quantity,
            unit_amount=Money.minor(line.unit_amount_minor, currency)
            if line.unit_amount_minor is not None
            else None,
            amount=Money.of(line.amount),
            period_start=line.period_start,
            period_end=line.period_end,
        )


@strawberry.type
class InvoicePreview:
    model: strawberry.Private[InvoicePreviewModel]

    @strawberry.field
    def currency(self) -> str:
        return self.model.currency

    @strawberry.field
    def period_start(self) -> datetime:
        return self.model.period.start

    @strawberry.field
    def period_end(self) -> datetime:
        return self.model.period.end

    @strawberry.field
    def lines(self) -> list[InvoiceLine]:
        return [InvoiceLine.of(line) for line in self.model.lines]

    @strawberry.field
    def subtotal(self) -> Money:
        return Money.of(self.model.subtotal)

    @strawberry.field
    def total(self) -> Money:
        return Money.of(self.model.total)


def events_from_input(input: RecordUsageInput) -> list[dict[str, Any]]:
    """The events as the service reads them (``UsageEventInput``'s field names), from
    Strawberry's input objects: already coerced, so typed values."""
    return [
        {
            "id": e.id,
            "customerId": e.customer_id,
            "externalCustomerId": e.external_customer_id,
            "meter": e.meter,
            "timestamp": e.timestamp,
            "value": e.value,
            "properties": e.properties,
        }
        for e in input.events
    ]


@strawberry.type
class UsageQuery:
    @typed.field(
        scope=Scope.READ,
        description="Admin, or the customer itself. A meter's aggregate over "
        "from <= timestamp < to; the default period is the customer's live subscription's "
        "current period, else the current UTC calendar month.",
    )
    async def usage(
        self,
        info: Info,
        *,
        customer_id: strawberry.ID | None = None,
        external_customer_id: str | None = None,
        meter: str,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
    ) -> UsageSummary:
        uid = await resolve_customer_id(info, customer_id, external_customer_id)
        if uid is None:
            raise UnknownCustomer("no such customer")
        rt = info.context.runtime
        found = await meters.load_meters(rt.db.pool, codes=[meter])
        if not found:
            raise UnknownMeter(f"no meter {meter!r}")
        model = found[0]
        if from_ is None or to is None:
            default = await current_period(rt.db.pool, uid, await rt.clock.now(), model.id)
            from_ = from_ if from_ is not None else default.start
            to = to if to is not None else default.end
        if to < from_:
            raise InvalidInput("'to' must not be before 'from'")
        totals = await aggregate(rt.db.pool, uid, [model], from_, to)
        return UsageSummary(meter=model.code, value=totals[model.id], from_=from_, to=to)

    @typed.field(
        scope=Scope.READ,
        description="Admin, or the subscription's customer. The bill so far for the current "
        "period: the plan's price, usage charges and pending prorations.",
    )
    async def invoice_preview(self, info: Info, subscription_id: strawberry.ID) -> InvoicePreview:
        require_viewer(info)
        rt = info.context.runtime
        uid = parse_uuid(subscription_id)
        head = await load_subscription_head(rt.db.pool, uid) if uid is not None else None
        require_customer(info, head.customer_id if head is not None else None)
        if head is None:
            raise NotFound("no such subscription")
        model = await invoice_preview(rt.db.pool, head, await rt.clock.now())
        return InvoicePreview(model=model)


RECORD_USAGE_SCOPE = Scope.USAGE_WRITE
"""What ``recordUsage`` declares (its bulk path checks the same)."""


@strawberry.type
class UsageMutation:
    @typed.mutation(
        scope=RECORD_USAGE_SCOPE,
        description="Admin. Record up to 1000 usage events, idempotent by event id. A batch "
        "with any invalid event is rejected whole (userErrors name each bad event's index).",
    )
    async def record_usage(self, info: Info, input: RecordUsageInput) -> RecordUsagePayload:
        require_admin(info)
        precomputed = info.context.precomputed.pop(RECORD_USAGE_RESULT, None)
        if isinstance(precomputed, RecordUsagePayload):
            return precomputed
        if isinstance(precomputed, Exception):  # the bulk path failed unexpectedly
            raise precomputed
        return await payload_of(record_usage(info.context.runtime, events_from_input(input)))


async def payload_of(ingesting: Awaitable[RecordUsageResult]) -> RecordUsagePayload:
    """Await the service and shape its outcome as the payload (both paths use this)."""
    try:
        result = await ingesting
    except (UserInputError, UserInputErrors) as exc:
        return RecordUsagePayload.failed(exc)
    return RecordUsagePayload.of(result)
