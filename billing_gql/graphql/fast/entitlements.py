"""The ``entitlement`` query's fast path: the app asks it on every request, so a plain
document — ``query($c: String!) { entitlement(externalCustomerId: $c, feature: "seats") {
enabled limit … } }`` — is answered without graphql-core's execution machinery.

The detector accepts only the simple shape (one ``entitlement`` field, optionally aliased,
arguments as literals or variables without defaults, scalar sub-fields without directives or
fragments) and the responder only the success case with variable values of the declared
types: anything else — a wrong variable type, an auth refusal, an invalid selector — returns
``None`` and the document executes as usual, so errors keep graphql-core's exact form. Both
paths run :func:`check_entitlement`; a test compares their answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    NamedTypeNode,
    NonNullTypeNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    StringValueNode,
    TypeNode,
    ValueNode,
    VariableNode,
)

from billing_gql.entitlements.service import Entitlement
from billing_gql.graphql.context import Context
from billing_gql.graphql.errors import ApiError
from billing_gql.graphql.fastpaths import FastPath
from billing_gql.graphql.scopes import refuses
from billing_gql.graphql.types.entitlements import ENTITLEMENT_SCOPE, check_entitlement
from billing_gql.money import format_decimal

__all__ = ["entitlement_fast_path"]

_ARGUMENTS = {"customerId": "ID", "externalCustomerId": "String", "feature": "String"}


def _decimal(value: Any) -> str | None:
    return None if value is None else format_decimal(value)


# Sub-field → its serialized value, exactly as the Entitlement type and our scalars give it.
_FIELDS: dict[str, Callable[[Entitlement], Any]] = {
    "__typename": lambda _: "Entitlement",
    "feature": lambda e: e.feature,
    "enabled": lambda e: e.enabled,
    "limit": lambda e: _decimal(e.limit),
    "used": lambda e: format_decimal(e.used),
    "remaining": lambda e: _decimal(e.remaining),
}

_MISSING = object()


@dataclass(frozen=True)
class _Source:
    """Where an argument's value comes from: a literal, or a variable (required or not)."""

    constant: Any = None
    variable: str | None = None
    required: bool = False


def _type_name(node: TypeNode) -> tuple[str, bool] | None:
    if isinstance(node, NonNullTypeNode) and isinstance(node.type, NamedTypeNode):
        return node.type.name.value, True
    if isinstance(node, NamedTypeNode):
        return node.name.value, False
    return None


def _source(value: ValueNode, variables: dict[str, tuple[str, bool]]) -> _Source | None:
    if isinstance(value, StringValueNode):
        return _Source(constant=value.value)
    if isinstance(value, NullValueNode):
        return _Source()
    if isinstance(value, VariableNode):
        declared = variables.get(value.name.value)
        if declared is None:
            return None
        return _Source(variable=value.name.value, required=declared[1])
    return None  # an ID given as an int literal and the like: the usual path coerces it


def entitlement_fast_path(operation: OperationDefinitionNode) -> FastPath | None:
    """A responder for a plain ``entitlement`` query, else ``None``."""
    if operation.operation != OperationType.QUERY or operation.directives:
        return None
    selections = operation.selection_set.selections
    if len(selections) != 1 or not isinstance(selections[0], FieldNode):
        return None
    root = selections[0]
    if root.name.value != "entitlement" or root.directives or root.selection_set is None:
        return None
    variables: dict[str, tuple[str, bool]] = {}
    for definition in operation.variable_definitions or ():
        declared = _type_name(definition.type)
        if declared is None or definition.default_value is not None or definition.directives:
            return None
        variables[definition.variable.name.value] = declared
    sources: dict[str, _Source] = {}
    for argument in root.arguments or ():
        name = argument.name.value
        source = _source(argument.value, variables)
        if name not in _ARGUMENTS or source is None:
            return None
        if source.variable is not None and variables[source.variable][0] != _ARGUMENTS[name]:
            return None
        sources[name] = source
    out: list[tuple[str, Callable[[Entitlement], Any]]] = []
    for selection in root.selection_set.selections:
        if (
            not isinstance(selection, FieldNode)
            or selection.directives
            or selection.arguments
            or selection.name.value not in _FIELDS
        ):
            return None
        key = selection.alias.value if selection.alias else selection.name.value
        out.append((key, _FIELDS[selection.name.value]))
    response_key = root.alias.value if root.alias else root.name.value

    def value_of(name: str, values: dict[str, Any]) -> Any:
        source = sources.get(name)
        if source is None:
            return None
        if source.variable is None:
            return source.constant
        value = values.get(source.variable, _MISSING)
        if value is _MISSING or value is None:
            return _MISSING if source.required else None
        return value if type(value) is str else _MISSING

    async def respond(context: Context, raw: dict[str, Any] | None) -> dict[str, Any] | None:
        if refuses(context.viewer, ENTITLEMENT_SCOPE):
            return None  # the usual execution refuses it (FORBIDDEN on the field)
        values = raw or {}
        customer_id = value_of("customerId", values)
        external_id = value_of("externalCustomerId", values)
        feature = value_of("feature", values)
        if _MISSING in (customer_id, external_id, feature) or not isinstance(feature, str):
            return None  # let GraphQL's coercion say what is wrong
        try:
            value = await check_entitlement(context, customer_id, external_id, feature)
        except ApiError:
            return None  # the usual execution reports it with its location and path
        return {response_key: {key: serialize(value) for key, serialize in out}}

    return FastPath(respond=respond)
