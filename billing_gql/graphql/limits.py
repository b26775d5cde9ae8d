"""Query limits: depth, aliases, cost (validation rules built once) and tokens (at parse time).

The rules are classes created once at import, so the validation cache keyed by document stays
valid (rules rebuilt per request defeat it: Strawberry issue #4635). Introspection fields
(``__schema``, ``__type``) count towards neither depth nor cost, so GraphiQL's introspection
query works; graphql-core's standard ``MaxIntrospectionDepthRule`` bounds their nesting.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    ArgumentNode,
    ASTValidationRule,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    get_named_type,
    get_nullable_type,
    specified_rules,
)

from billing_gql.graphql.errors import GraphQLErrorCode
from billing_gql.graphql.pages import DEFAULT_PAGE, MAX_PAGE

VALIDATION_FAILED = GraphQLErrorCode.GRAPHQL_VALIDATION_FAILED.value
QUERY_TOO_COMPLEX = GraphQLErrorCode.QUERY_TOO_COMPLEX.value
LIST_ITEMS = 10
"""What a list without a ``first`` argument counts for, outside a connection: such lists hold
what an admin defined (a plan's prices, features, charges, tiers; the plans; the providers)
or what follows from it (a customer's entitlements), never what a customer can multiply."""


def _depth(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    visited: frozenset[str],
    limit: int,
) -> int:
    if selection_set is None:
        return 0
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value.startswith("__"):
                continue
            depth = 1 + _depth(selection.selection_set, fragments, visited, limit)
        elif isinstance(selection, InlineFragmentNode):
            depth = _depth(selection.selection_set, fragments, visited, limit)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is None or name in visited:
                continue  # unknown or cyclic fragments are reported by the standard rules
            depth = _depth(fragment.selection_set, fragments, visited | {name}, limit)
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break  # no need to walk further
    return deepest


class _OperationRule(ASTValidationRule):
    """A rule that looks at each operation whole, with the document's fragments at hand."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        context = self.context
        assert isinstance(context, ValidationContext)
        fragments = {
            d.name.value: d
            for d in context.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        self.check(node, fragments)

    def check(
        self, node: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
    ) -> None:
        raise NotImplementedError


def depth_limit_rule(max_depth: int) -> type[ASTValidationRule]:
    class DepthLimitRule(_OperationRule):
        def check(
            self, node: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
        ) -> None:
            depth = _depth(node.selection_set, fragments, frozenset(), max_depth)
            if depth > max_depth:
                name = node.name.value if node.name else "anonymous"
                self.report_error(
                    GraphQLError(
                        f"'{name}' exceeds the maximum query depth of {max_depth}.",
                        node,
                        extensions={"code": VALIDATION_FAILED},
                    )
                )

    return DepthLimitRule


def _aliases(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    counted: dict[str, int],
    visiting: frozenset[str],
    limit: int,
) -> int:
    """Aliased fields an operation executes: a fragment counts once per spread, so one
    fragment of aliases spread under many aliased parents cannot multiply past the limit."""
    if selection_set is None:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.alias is not None:
                total += 1
            total += _aliases(selection.selection_set, fragments, counted, visiting, limit)
        elif isinstance(selection, InlineFragmentNode):
            total += _aliases(selection.selection_set, fragments, counted, visiting, limit)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is None or name in visiting:
                continue  # unknown or cyclic fragments are reported by the standard rules
            if name not in counted:
                counted[name] = _aliases(
                    fragment.selection_set, fragments, counted, visiting | {name}, limit
                )
            total += counted[name]
        if total > limit:
            break  # no need to count further
    return total


def alias_limit_rule(max_aliases: int) -> type[ASTValidationRule]:
    class AliasLimitRule(_OperationRule):
        def check(
            self, node: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
        ) -> None:
            count = _aliases(node.selection_set, fragments, {}, frozenset(), max_aliases)
            if count > max_aliases:
                self.report_error(
                    GraphQLError(
                        f"The document uses more than {max_aliases} aliases.",
                        node,
                        extensions={"code": VALIDATION_FAILED},
                    )
                )

    return AliasLimitRule


def _first(node: FieldNode, field: GraphQLField) -> int | None:
    """The page size a field's ``first`` argument asks for, clamped as ``page_request`` clamps
    it: a literal, else (a variable: its value is not known yet) the maximum; ``None`` when
    the field takes no ``first``."""
    definition = field.args.get("first")
    if definition is None:
        return None
    given: ArgumentNode | None = next(
        (a for a in node.arguments or () if a.name.value == "first"), None
    )
    if given is None:
        default = definition.default_value
        return min(default, MAX_PAGE) if isinstance(default, int) else DEFAULT_PAGE
    if isinstance(given.value, NullValueNode):
        return DEFAULT_PAGE
    if isinstance(given.value, IntValueNode):
        return max(0, min(int(given.value.value), MAX_PAGE))
    return MAX_PAGE


class _Cost:
    """The cost of one operation: every field resolved counts 1, once per item of each list
    around it. A list counts its ``first`` (clamped to 100) items; a connection's (a field
    taking ``first`` that is not a list) ``edges`` and ``nodes`` count its ``first``; any other
    list counts :data:`LIST_ITEMS`. A fragment counts at each spread (computed once)."""

    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode]):
        self.schema = schema
        self.fragments = fragments
        self.memo: dict[tuple[str, int | None], int] = {}

    def selections(
        self,
        selection_set: SelectionSetNode | None,
        parent: GraphQLNamedType | None,
        page: int | None,
        visiting: frozenset[str],
    ) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, page, visiting)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selections(selection.selection_set, target, page, visiting)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in visiting:
                    continue  # unknown or cyclic fragments are reported by the standard rules
                key = (name, page)
                if key not in self.memo:
                    target = self.schema.get_type(fragment.type_condition.name.value)
                    self.memo[key] = self.selections(
                        fragment.selection_set, target, page, visiting | {name}
                    )
                total += self.memo[key]
        return total

    def field(
        self,
        node: FieldNode,
        parent: GraphQLNamedType | None,
        page: int | None,
        visiting: frozenset[str],
    ) -> int:
        name = node.name.value
        if name in ("__schema", "__type"):
            return 0  # introspection: bounded by the schema and MaxIntrospectionDepthRule
        fields = (
            parent.fields if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType) else {}
        )
        definition = fields.get(name)
        if definition is None:
            return 1  # __typename (or an unknown field, which the standard rules report)
        first = _first(node, definition)
        if isinstance(get_nullable_type(definition.type), GraphQLList):
            items = first if first is not None else page if page is not None else LIST_ITEMS
            first = None  # the items' own lists are not this page
        else:
            items = 1
        inner = self.selections(
            node.selection_set, get_named_type(definition.type), first, visiting
        )
        return items * (1 + inner)


def operation_cost(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
) -> int:
    """The estimated number of fields ``operation`` resolves (see :class:`_Cost`)."""
    root = schema.get_root_type(operation.operation)
    return _Cost(schema, fragments).selections(operation.selection_set, root, None, frozenset())


def cost_limit_rule(max_cost: int) -> type[ASTValidationRule]:
    class CostLimitRule(_OperationRule):
        def check(
            self, node: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
        ) -> None:
            context = self.context
            assert isinstance(context, ValidationContext)
            cost = operation_cost(context.schema, node, fragments)
            if cost > max_cost:
                name = node.name.value if node.name else "anonymous"
                self.report_error(
                    GraphQLError(
                        f"'{name}' costs {cost}, more than the limit of {max_cost}: ask for "
                        "fewer fields or smaller pages (`first`).",
                        node,
                        extensions={"code": QUERY_TOO_COMPLEX, "cost": cost, "maxCost": max_cost},
                    )
                )

    return CostLimitRule


def build_rules(max_depth: int, max_aliases: int) -> tuple[type[ASTValidationRule], ...]:
    """The standard rules plus ours; build once per process and reuse."""
    return (*specified_rules, depth_limit_rule(max_depth), alias_limit_rule(max_aliases))
