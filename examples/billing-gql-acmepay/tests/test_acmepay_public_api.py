"""The plugin uses only billing-gql's public plugin API (``billing_gql.__all__``), and its tests
add only the test kit (``billing_gql.testing.__all__``): nothing private, so a new billing-gql
release within the pinned range cannot break it from underneath."""

from __future__ import annotations

from pathlib import Path

from billing_gql.testing import private_imports

PACKAGE = Path(__file__).resolve().parents[1] / "billing_gql_acmepay"
TESTS = Path(__file__).resolve().parent


def test_the_package_imports_only_public_names() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 5
    assert private_imports(files) == []


def test_the_tests_add_only_the_test_kit() -> None:
    assert private_imports(TESTS.glob("*.py"), kit=True) == []
