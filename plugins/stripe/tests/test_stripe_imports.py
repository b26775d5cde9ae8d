"""The plugin imports only billing-gql's public API (DESIGN.md "Dependency rules")."""

from __future__ import annotations

import ast
from pathlib import Path

from billing_gql.testing import private_imports

PACKAGE = Path(__file__).resolve().parents[1] / "billing_gql_stripe"
TESTS = Path(__file__).resolve().parent


def imports(path: Path) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return found


def test_the_package_uses_only_billing_gqls_public_names() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert files
    assert private_imports(files) == []


def test_the_tests_add_only_the_test_kit() -> None:
    allowed = {"billing_gql", "billing_gql.testing"}
    # End-to-end tests also drive the CLI, the runtime and the reconcile service directly.
    e2e = {
        "billing_gql.cli",
        "billing_gql.runtime",
        "billing_gql.settings",
        "billing_gql.subscriptions.reconcile",
    }
    for path in sorted(TESTS.glob("test_*.py")):
        for module, _ in imports(path):
            if module.startswith("billing_gql.") or module == "billing_gql":
                permitted = allowed | (e2e if path.name == "test_stripe_e2e.py" else set())
                in_kit = module.startswith("billing_gql.testing.")
                assert module in permitted or in_kit, f"{path.name} imports {module}"
