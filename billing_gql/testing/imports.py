"""Does a plugin use only billing-gql's public API? An import scan for a package's own tests."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

__all__ = ["private_imports"]


def _dynamic_import(node: ast.Call) -> str | None:
    """The module named by ``importlib.import_module("…")`` or ``__import__("…")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def _billing_gql_imports(path: Path) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.Call) and (module := _dynamic_import(node)) is not None:
            found.append((module, []))
    return [(m, n) for m, n in found if m == "billing_gql" or m.startswith("billing_gql.")]


def private_imports(
    files: Iterable[Path], *, kit: bool = False, allow: Iterable[str] = ()
) -> list[str]:
    """What in ``files`` reaches past billing-gql's public API: an empty list when nothing does.

    Allowed: ``import billing_gql`` and ``from billing_gql import <names in __all__>``; with
    ``kit=True`` (a package's tests) also ``billing_gql.testing`` and its ``__all__``. Dynamic
    imports (``importlib.import_module("billing_gql.…")``) count too. ``allow`` names further
    modules allowed whole — for billing-gql's own first-party plugins, whose end-to-end tests
    drive the CLI or the runtime; a third-party package has no use for it.
    """
    import billing_gql
    import billing_gql.testing

    allowed: dict[str, set[str] | None] = {"billing_gql": set(billing_gql.__all__)}
    if kit:
        allowed["billing_gql.testing"] = set(billing_gql.testing.__all__)
    allowed.update(dict.fromkeys(allow))
    problems = []
    for path in sorted(files):
        for module, names in _billing_gql_imports(path):
            if module not in allowed:
                problems.append(f"{path.name} imports {module}")
                continue
            public = allowed[module]  # None: the whole module is allowed
            if public is not None and not set(names) <= public:
                private = sorted(set(names) - public)
                problems.append(f"{path.name} imports {', '.join(private)} from {module}")
    return problems
