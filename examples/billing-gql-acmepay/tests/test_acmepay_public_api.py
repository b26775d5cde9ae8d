"""The plugin uses only billing-gql's public plugin API (``billing_gql.__all__``), and its tests
add only the test kit (``billing_gql.testing.__all__``): nothing private, so a new billing-gql
release within the pinned range cannot break it from underneath."""

from __future__ import annotations

import ast
from pathlib import Path

import billing_gql
import billing_gql.testing

PACKAGE = Path(__file__).resolve().parents[1] / "billing_gql_acmepay"
TESTS = Path(__file__).resolve().parent


def billing_gql_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import of ``billing_gql`` or below in ``path``."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return [(m, n) for m, n in found if m == "billing_gql" or m.startswith("billing_gql.")]


def test_the_package_imports_only_public_names() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        for module, names in billing_gql_imports(path):
            assert module == "billing_gql", f"{path.name} imports {module}"
            assert names and set(names) <= set(billing_gql.__all__), (path.name, names)


def test_the_tests_add_only_the_test_kit() -> None:
    allowed = {
        "billing_gql": billing_gql.__all__,
        "billing_gql.testing": billing_gql.testing.__all__,
    }
    for path in sorted(TESTS.glob("*.py")):
        for module, names in billing_gql_imports(path):
            assert module in allowed, f"{path.name} imports {module}"
            assert set(names) <= set(allowed[module]), (path.name, names)
