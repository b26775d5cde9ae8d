"""``recordUsage``'s bulk path through the GraphQL endpoint.

graphql-core coerces a variable of ``RecordUsageInput!`` field by field and Strawberry then
builds an input object per event: for a batch of 1000 events that costs several times the
database insert itself. So when a document is exactly ``mutation($x: RecordUsageInput!) {
recordUsage(input: $x) { … } }``, the endpoint hands the raw variable's events (the JSON
objects) to the service's validation loop (:func:`~billing_gql.metering.ingest.record_usage`),
which coerces each raw string as the DateTime and Decimal scalars do (this module passes their
parsers in) and accepts only what GraphQL coercion would accept, with the same result. Anything
else — a JSON number for a Decimal, an unknown field, a bad date — raises
:class:`~billing_gql.metering.validation.NotCoercible` before anything is stored, and the request
falls back to the ordinary path, which reports it exactly as GraphQL does. The document is then
executed as usual with an empty event list, the resolver returning the precomputed payload: the
response's shape (aliases, fragments, ``__typename``) stays graphql-core's.
"""

from __future__ import annotations

from datetime import datetime
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

from billing_gql.graphql.audit import AuditCall
from billing_gql.graphql.context import Context
from billing_gql.graphql.fastpaths import FastPath
from billing_gql.graphql.scalars import parse_datetime
from billing_gql.graphql.scopes import refuses
from billing_gql.graphql.types.usage import RECORD_USAGE_RESULT, RECORD_USAGE_SCOPE, payload_of
from billing_gql.metering.ingest import record_usage
from billing_gql.metering.validation import MAX_EVENTS, NotCoercible, RawCoercion
from billing_gql.money import MoneyError, parse_decimal

__all__ = ["COERCION", "record_usage_fast_path"]


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
    operation_name = operation.name.value if operation.name else None
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
            if not context.viewer.is_admin or refuses(context.viewer, RECORD_USAGE_SCOPE):
                # The resolver refuses them whatever they sent: spare coercing up to 2 MiB of
                # events on the way to that error.
                return {**variables, name: {"events": []}}
            raw = variables.get(name)
            if type(raw) is not dict or raw.keys() != {"events"}:
                return variables
            events = raw["events"]
            if type(events) is not list or len(events) > MAX_EVENTS:
                return variables  # the ordinary path refuses it (TOO_MANY_EVENTS)
            # The audit row commits with the batch (the resolver then records nothing).
            audit = AuditCall.start(context, "recordUsage", operation_name, {"input": raw})
            try:
                payload = await payload_of(record_usage(context.runtime, events, COERCION))
            except NotCoercible:
                if audit is not None:
                    audit.abandon()  # nothing stored: the ordinary path runs and records it
                return variables
            except Exception as error:
                # Raised by the resolver instead: a GraphQL error (logged), not an HTTP 500.
                if audit is not None:
                    await audit.finish_error(error)
                    context.audited.add("recordUsage")
                context.precomputed[RECORD_USAGE_RESULT] = error
                return {**variables, name: {"events": []}}
            if audit is not None:
                await audit.finish_with(payload)
                context.audited.add("recordUsage")
            context.precomputed[RECORD_USAGE_RESULT] = payload
            return {**variables, name: {"events": []}}

        return FastPath(pre_execute=pre_execute)
    return None


def _datetime(text: str) -> datetime | None:
    """The DateTime scalar's parse (the service reads the common UTC form without it)."""
    try:
        return parse_datetime(text)
    except ValueError:
        return None


def _decimal(text: str) -> Decimal | None:
    """The Decimal scalar's parse (the service reads plain digit strings without it)."""
    # Exactly the scalar's function: Decimal() itself also takes "1_000" and exponents beyond
    # the context's range, which the scalar refuses.
    try:
        return parse_decimal(text, allow_negative=True)
    except MoneyError:
        return None


COERCION = RawCoercion(timestamp=_datetime, decimal=_decimal)
"""The DateTime and Decimal scalars' parsing of raw strings, for the service's loop."""
