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


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _sdk_private_uses(path: Path, sdks: frozenset[str]) -> list[str]:
    """Private parts of the SDK packages ``sdks`` that ``path`` reaches: an underscored module
    (``stripe._http_client``), an underscored name imported from one of them, or an
    underscored attribute of the package itself (``stripe._util``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [(node.module, [a.name for a in node.names])]
        elif isinstance(node, ast.Import):
            modules = [(a.name, []) for a in node.names]
        elif isinstance(node, ast.Call) and (module := _dynamic_import(node)) is not None:
            modules = [(module, [])]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in sdks
            and _private(node.attr)
        ):
            found.append(f"{path.name} uses {node.value.id}.{node.attr}")
            continue
        else:
            continue
        for module, names in modules:
            if module.split(".")[0] not in sdks:
                continue
            if any(_private(part) for part in module.split(".")):
                found.append(f"{path.name} imports {module}")
            hidden = sorted(n for n in names if _private(n))
            if hidden:
                found.append(f"{path.name} imports {', '.join(hidden)} from {module}")
    return found


def private_imports(
    files: Iterable[Path],
    *,
    kit: bool = False,
    allow: Iterable[str] = (),
    sdks: Iterable[str] = (),
) -> list[str]:
    """What in ``files`` reaches past billing-gql's public API: an empty list when nothing does.

    Allowed: ``import billing_gql`` and ``from billing_gql import <names in __all__>``; with
    ``kit=True`` (a package's tests) also ``billing_gql.testing`` and its ``__all__``. Dynamic
    imports (``importlib.import_module("billing_gql.…")``) count too. ``allow`` names further
    modules allowed whole — for billing-gql's own first-party plugins, whose end-to-end tests
    drive the CLI or the runtime; a third-party package has no use for it.

    ``sdks`` names the provider SDK packages a plugin is built on (``("stripe",)``): reaching
    into their private modules or names (anything underscored, ``stripe._http_client``) is
    listed too, since only an SDK's public API is kept stable across its releases.
    """
    import billing_gql
    import billing_gql.testing

    allowed: dict[str, set[str] | None] = {"billing_gql": set(billing_gql.__all__)}
    if kit:
        allowed["billing_gql.testing"] = set(billing_gql.testing.__all__)
    allowed.update(dict.fromkeys(allow))
    packages = frozenset(sdks)
    problems = []
    for path in sorted(files):
        if packages:
            problems.extend(_sdk_private_uses(path, packages))
        for module, names in _billing_gql_imports(path):
            if module not in allowed:
                problems.append(f"{path.name} imports {module}")
                continue
            public = allowed[module]  # None: the whole module is allowed
            if public is not None and not set(names) <= public:
                private = sorted(set(names) - public)
                problems.append(f"{path.name} imports {', '.join(private)} from {module}")
    return problems
