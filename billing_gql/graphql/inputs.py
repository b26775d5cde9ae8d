"""Text no field can store, refused where a request enters (issue #19's fuzzing finding).

PostgreSQL's text types refuse the NUL character, and UTF-8 (the wire and the database
encoding) has no form for an unpaired surrogate; JSON carries both (``"\\u0000"``,
``"\\ud800"``), and so does a GraphQL string literal. Reaching a statement, either failed the
request with an internal error (a 500 on the fast paths). Rather than check each field, every
string of a request — variables (any depth, keys too) and the document's string literals — is
checked once at the door: a variable is refused like one that does not coerce
(``INVALID_INPUT``), a literal like an invalid document (``GRAPHQL_VALIDATION_FAILED``).
"""

from __future__ import annotations

import re
from typing import Any

from graphql import DocumentNode, GraphQLError, StringValueNode, Visitor, visit

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_ESCAPED = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
"""In raw JSON these characters can only appear escaped: a body without such an escape
cannot carry one, and is not walked (a 1000-event usage batch stays one regex pass)."""


def _path_text(path: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def unstorable_value(value: Any, path: list[str | int] | None = None) -> str | None:
    """The path (``input.email``, ``e[3].id``) of the first string in ``value`` holding text
    no field can store, else ``None``."""
    path = path or []
    if isinstance(value, str):
        return _path_text(path) if _UNSTORABLE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _UNSTORABLE.search(key):
                return _path_text([*path, key])
            found = unstorable_value(item, [*path, key])
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = unstorable_value(item, [*path, index])
            if found is not None:
                return found
    return None


def may_hold_unstorable(raw: bytes) -> bool:
    """Whether a raw JSON body may hold such text (an escape that decodes to it)."""
    return _ESCAPED.search(raw) is not None


def variables_problem(variables: dict[str, Any] | None) -> GraphQLError | None:
    """An error for variables holding text no field can store (``None``: they hold none)."""
    if not variables:
        return None
    found = unstorable_value(variables)
    if found is None:
        return None
    return GraphQLError(
        f"Variable '${found}' holds a NUL character or an unpaired surrogate, which no "
        "field accepts.",
        extensions={"code": "INVALID_INPUT"},
    )


class _Literals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.bad: list[StringValueNode] = []

    def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
        if _UNSTORABLE.search(node.value):
            self.bad.append(node)


def literal_problems(query: str, document: DocumentNode) -> list[GraphQLError]:
    """Errors for the string literals of ``document`` holding text no field can store."""
    if "\\u" not in query and not _UNSTORABLE.search(query):
        return []
    visitor = _Literals()
    visit(document, visitor)
    return [
        GraphQLError(
            "String literals may not hold a NUL character or an unpaired surrogate.",
            nodes=[node],
        )
        for node in visitor.bad
    ]
