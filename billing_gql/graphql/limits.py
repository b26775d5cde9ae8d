"""Query limits: depth, aliases (validation rules built once) and tokens (at parse time).

The rules are classes created once at import, so the validation cache keyed by document stays
valid (rules rebuilt per request defeat it: Strawberry issue #4635). Introspection fields
(``__schema``, ``__type``) do not count towards depth, so GraphiQL's introspection query works.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    ASTValidationRule,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    specified_rules,
)

VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"


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


def build_rules(max_depth: int, max_aliases: int) -> tuple[type[ASTValidationRule], ...]:
    """The standard rules plus ours; build once per process and reuse."""
    return (*specified_rules, depth_limit_rule(max_depth), alias_limit_rule(max_aliases))
