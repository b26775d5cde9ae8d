"""The plugin imports only billing-gql's and its SDKs' public API
(docs/architecture.md#dependency-rules)."""

from __future__ import annotations

from importlib.metadata import distribution, entry_points
from pathlib import Path

from billing_gql.testing import private_imports
from billing_gql_polar.testing import load_spec

PACKAGE = Path(__file__).resolve().parents[1] / "billing_gql_polar"
TESTS = Path(__file__).resolve().parent
# The reconcile tests also drive the CLI, the runtime and the reconcile service.
E2E_FILES = {"test_polar_reconcile.py"}
E2E = ("billing_gql.cli", "billing_gql.runtime", "billing_gql.subscriptions.reconcile")


def test_the_package_uses_only_billing_gqls_and_the_sdks_public_names() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert {p.name for p in files} == {
        "__init__.py",
        "api.py",
        "invoices.py",
        "mapping.py",
        "metered.py",
        "plugin.py",
        "refunds.py",
        "testing.py",
        "webhooks.py",
    }
    assert private_imports(files, sdks=("polar", "standardwebhooks")) == []


def test_the_tests_add_only_the_test_kit() -> None:
    files = sorted(TESTS.glob("*.py"))
    assert {p.name for p in files} >= E2E_FILES
    others = [p for p in files if p.name not in E2E_FILES]
    assert private_imports(others, kit=True) == []
    e2e = [p for p in files if p.name in E2E_FILES]
    assert private_imports(e2e, kit=True, allow=E2E) == []


def test_the_distribution_registers_its_entry_point() -> None:
    [point] = [e for e in entry_points(group="billing_gql") if e.name == "polar"]
    assert point.value == "billing_gql_polar.plugin"
    dist = distribution("billing-gql-polar")
    assert dist.version == "0.1.0"
    assert any(r.startswith("billing-gql") for r in dist.requires or [])
    # The schema the fake validates against ships as package data.
    assert load_spec()["info"] == {"title": "Polar API", "version": "2026-10"}
