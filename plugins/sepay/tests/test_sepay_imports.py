"""The plugin imports only billing-gql's public API (DESIGN.md "Dependency rules")."""

from __future__ import annotations

import ast
from pathlib import Path

from billing_gql.testing import private_imports

PACKAGE = Path(__file__).resolve().parents[1] / "billing_gql_sepay"
TESTS = Path(__file__).resolve().parent
E2E_FILES = {"test_sepay_reconcile.py", "test_sepay_cli.py"}


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
    assert {p.name for p in files} >= {"plugin.py", "testing.py", "transfers.py", "api.py"}
    assert private_imports(files) == []


def test_the_tests_add_only_the_test_kit_and_the_processes_they_drive() -> None:
    allowed = {
        "billing_gql",
        "billing_gql.testing",
        "billing_gql.testing.server",
        "billing_gql.settings",
    }
    # CLI and reconciliation tests drive the CLI, a worker-like runtime and the reconcile
    # service.
    e2e = {"billing_gql.cli", "billing_gql.runtime", "billing_gql.subscriptions.reconcile"}
    for path in sorted(TESTS.glob("*.py")):
        for module, _ in imports(path):
            if module.startswith("billing_gql.") or module == "billing_gql":
                permitted = allowed | (e2e if path.name in E2E_FILES else set())
                assert module in permitted, f"{path.name} imports {module}"
