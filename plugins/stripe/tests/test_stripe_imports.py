"""The plugin imports only billing-gql's and the ``stripe`` SDK's public API
(docs/architecture.md#dependency-rules)."""

from __future__ import annotations

from pathlib import Path

from billing_gql.testing import private_imports

PACKAGE = Path(__file__).resolve().parents[1] / "billing_gql_stripe"
TESTS = Path(__file__).resolve().parent
# End-to-end tests also drive the CLI, the runtime and the reconcile and refund services
# directly (the refund race runs the service concurrently in one runtime).
E2E_FILES = {"test_stripe_e2e.py", "test_stripe_refunds.py"}
E2E = (
    "billing_gql.cli",
    "billing_gql.runtime",
    "billing_gql.subscriptions.reconcile",
    "billing_gql.refunds.service",
)


def test_the_package_uses_only_billing_gqls_and_the_sdks_public_names() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert files
    assert private_imports(files, sdks=("stripe",)) == []


def test_the_tests_add_only_the_test_kit() -> None:
    files = sorted(TESTS.glob("*.py"))
    assert {p.name for p in files} >= E2E_FILES
    others = [p for p in files if p.name not in E2E_FILES]
    assert private_imports(others, kit=True) == []
    e2e = [p for p in files if p.name in E2E_FILES]
    assert private_imports(e2e, kit=True, allow=(*E2E, "billing_gql.settings")) == []
