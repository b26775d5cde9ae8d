"""``recordUsage``'s bulk path through the GraphQL endpoint.

graphql-core coerces a variable of ``RecordUsageInput!`` field by field and Strawberry then
builds an input object per event: for a batch of 1000 events that costs several times the
database insert itself. So when a document is exactly ``mutation($x: RecordUsageInput!) {
recordUsage(input: $x) { … } }``, the endpoint hands the raw variable to :func:`parse_events`,
a single loop that accepts only what GraphQL coercion would accept with the same values
(anything else — a JSON number for a Decimal, an unknown field, a bad date — falls back to the
ordinary path, which reports it exactly as GraphQL does). The service runs on the parsed events
and the document is then executed as usual with an empty event list, the resolver returning
the precomputed payload: the response's shape (aliases, fragments, ``__typename``) stays
graphql-core's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from graphql import (
    FieldNode,
    NamedTypeNode,
    NonNullTypeNode,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
)

from billing_gql.graphql.context import Context
from billing_gql.graphql.fastpaths import FastPath
from billing_gql.graphql.scalars import parse_datetime
from billing_gql.money import MoneyError, parse_decimal
from billing_gql.usage.graphql import RECORD_USAGE_RESULT, run_record_usage
from billing_gql.usage.ingest import MAX_EVENTS
from billing_gql.usage.models import UsageEventDraft

__all__ = ["parse_events", "record_usage_fast_path"]

_FIELDS = frozenset(
    {"id", "customerId", "externalCustomerId", "meter", "timestamp", "value", "properties"}
)
_ABSENT = object()


def record_usage_fast_path(operation: OperationDefinitionNode) -> FastPath | None:
    """The bulk pre-executor for a plain ``recordUsage(input: $var)`` mutation, else ``None``."""
    if operation.operation != OperationType.MUTATION:
        return None
    selections = operation.selection_set.selections
    if len(selections) != 1 or not isinstance(selections[0], FieldNode):
        return None
    field = selections[0]
    arguments = field.arguments or ()
    if field.name.value != "recordUsage" or field.directives or len(arguments) != 1:
        return None
    argument = arguments[0]
    if argument.name.value != "input" or not isinstance(argument.value, VariableNode):
        return None
    name = argument.value.name.value
    for definition in operation.variable_definitions or ():
        if definition.variable.name.value != name:
            continue
        declared = definition.type
        if not (
            isinstance(declared, NonNullTypeNode)
            and isinstance(declared.type, NamedTypeNode)
            and declared.type.name.value == "RecordUsageInput"
        ):
            return None

        async def pre_execute(
            context: Context, variables: dict[str, Any] | None
        ) -> dict[str, Any] | None:
            if variables is None:
                return variables
            if not context.viewer.is_admin:
                # The resolver refuses them whatever they sent: spare coercing up to 2 MiB of
                # events on the way to that error.
                return {**variables, name: {"events": []}}
            drafts = parse_events(variables.get(name))
            if drafts is None:
                return variables
            payload = await run_record_usage(context.runtime, drafts)
            context.precomputed[RECORD_USAGE_RESULT] = payload
            return {**variables, name: {"events": []}}

        return FastPath(pre_execute=pre_execute)
    return None


def _datetime(text: str) -> datetime | None:
    """The DateTime scalar's parse, with a shortcut for the common ``…Z``/``…+00:00`` form."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is not None and parsed.tzinfo is UTC:
        return parsed
    try:
        return parse_datetime(text)
    except ValueError:
        return None


def _decimal(text: str) -> Decimal | None:
    """The Decimal scalar's parse, with a shortcut for short plain numbers."""
    # Up to 50 characters the context's 60-digit precision never rounds, so Decimal() is exact
    # and the same; parse_decimal handles the rest (and refuses NaN and Infinity).
    if len(text) <= 50:
        try:
            number = Decimal(text)
        except ArithmeticError:
            return None
        if number.is_finite():
            return number
    try:
        return parse_decimal(text, allow_negative=True)
    except MoneyError:
        return None


def parse_events(raw: object) -> list[UsageEventDraft] | None:
    """Events from a raw ``RecordUsageInput`` variable, with GraphQL's coercion rules.

    ``None`` when anything is outside what coercion would accept unchanged (and for more than
    :data:`MAX_EVENTS` events, which the ordinary path refuses anyway): the caller falls back.
    """
    if type(raw) is not dict or raw.keys() != {"events"}:
        return None
    events = raw["events"]
    if type(events) is not list or len(events) > MAX_EVENTS:
        return None
    out: list[UsageEventDraft] = []
    append = out.append
    for event in events:
        if type(event) is not dict or not event.keys() <= _FIELDS:
            return None
        event_id = event.get("id")
        meter = event.get("meter")
        customer_id = event.get("customerId")
        external_id = event.get("externalCustomerId")
        if (
            type(event_id) is not str
            or type(meter) is not str
            or (customer_id is not None and type(customer_id) is not str)
            or (external_id is not None and type(external_id) is not str)
        ):
            return None
        stamp = event.get("timestamp")
        if stamp is not None:
            if type(stamp) is not str:
                return None
            stamp = _datetime(stamp)
            if stamp is None:
                return None
        value = event.get("value", _ABSENT)
        if value is _ABSENT:
            value = None  # the service's default, 1 (as GraphQL's default "1")
        elif value is not None:
            if type(value) is not str:
                return None
            value = _decimal(value)
            if value is None:
                return None
        append(
            UsageEventDraft(
                event_id,
                customer_id,
                external_id,
                meter,
                stamp,
                value,
                event.get("properties"),
            )
        )
    return out
