"""The plugin imports only billing-gql's public API (DESIGN.md "Dependency rules")."""

from __future__ import annotations

import ast
from importlib.metadata import distribution, entry_points
from pathlib import Path

from billing_gql.testing import private_imports
from billing_gql_polar.testing import load_spec

PACKAGE = Path(__file__).resolve().parents[1] / "billing_gql_polar"
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
    assert len(files) == 6
    assert private_imports(files) == []


def test_the_tests_add_only_the_test_kit() -> None:
    allowed = {"billing_gql", "billing_gql.testing"}
    # The reconcile tests also drive the CLI, the runtime and the reconcile service.
    reconcile = {"billing_gql.cli", "billing_gql.runtime", "billing_gql.subscriptions.reconcile"}
    for path in sorted(TESTS.glob("*.py")):
        for module, _ in imports(path):
            if module.startswith("billing_gql.") or module == "billing_gql":
                permitted = allowed | (
                    reconcile if path.name == "test_polar_reconcile.py" else set()
                )
                in_kit = module.startswith("billing_gql.testing.")
                assert module in permitted or in_kit, f"{path.name} imports {module}"


def test_the_distribution_registers_its_entry_point() -> None:
    [point] = [e for e in entry_points(group="billing_gql") if e.name == "polar"]
    assert point.value == "billing_gql_polar.plugin"
    dist = distribution("billing-gql-polar")
    assert dist.version == "0.1.0"
    assert any(r.startswith("billing-gql") for r in dist.requires or [])
    # The schema the fake validates against ships as package data.
    assert load_spec()["info"] == {"title": "Polar API", "version": "2026-10"}
