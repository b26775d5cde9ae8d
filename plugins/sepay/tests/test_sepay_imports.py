"""The plugin imports only billing-gql's public API (docs/architecture.md#dependency-rules)."""

from __future__ import annotations

from pathlib import Path

from billing_gql.testing import private_imports

PACKAGE = Path(__file__).resolve().parents[1] / "billing_gql_sepay"
TESTS = Path(__file__).resolve().parent
# CLI and reconciliation tests drive the CLI, a worker-like runtime and the reconcile service.
E2E_FILES = {"test_sepay_reconcile.py", "test_sepay_cli.py"}
E2E = ("billing_gql.cli", "billing_gql.runtime", "billing_gql.subscriptions.reconcile")


def test_the_package_uses_only_billing_gqls_public_names() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert {p.name for p in files} >= {"plugin.py", "testing.py", "transfers.py", "api.py"}
    assert private_imports(files) == []


def test_the_tests_add_only_the_test_kit_and_the_processes_they_drive() -> None:
    files = sorted(TESTS.glob("*.py"))
    assert {p.name for p in files} >= E2E_FILES
    # Every test may build the app's settings (routes, the test clock) for make_api.
    others = [p for p in files if p.name not in E2E_FILES]
    assert private_imports(others, kit=True, allow=("billing_gql.settings",)) == []
    e2e = [p for p in files if p.name in E2E_FILES]
    assert private_imports(e2e, kit=True, allow=(*E2E, "billing_gql.settings")) == []
