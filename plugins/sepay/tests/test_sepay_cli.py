"""``billing-gql plugins`` finds SePay through its entry point and says what is missing or
malformed in its settings."""

from __future__ import annotations

import pytest

from billing_gql.cli import main
from billing_gql_sepay.testing import FakeSePay


@pytest.fixture
def sepay_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("BILLING_GQL_PLUGINS", "sepay")
    env = FakeSePay().env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_plugins_lists_sepay_from_its_distribution(
    sepay_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "sepay\tbilling-gql-sepay 0.1.0\tconfigured\tbank_transfer,checkout,reconcile\n" in out


def test_plugins_lists_reconcile_only_with_an_api_token(
    sepay_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("BILLING_GQL_SEPAY_API_TOKEN")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "sepay\tbilling-gql-sepay 0.1.0\tconfigured\tbank_transfer,checkout\n" in out


def test_missing_settings_are_named(
    sepay_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("BILLING_GQL_SEPAY_WEBHOOK_API_KEY")
    monkeypatch.setenv("BILLING_GQL_SEPAY_BANK_CODE", "")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert (
        "sepay\tbilling-gql-sepay 0.1.0\tnot configured (missing BILLING_GQL_SEPAY_BANK_CODE, "
        "BILLING_GQL_SEPAY_WEBHOOK_API_KEY)\tbank_transfer,checkout,reconcile\n"
    ) in out


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REFERENCE_PREFIX", "B1", "BILLING_GQL_SEPAY_REFERENCE_PREFIX must be 2-5 letters"),
        ("REFERENCE_LENGTH", "four", "BILLING_GQL_SEPAY_REFERENCE_LENGTH must be an integer"),
        ("REFERENCE_LENGTH", "3", "BILLING_GQL_SEPAY_REFERENCE_LENGTH must be between 6 and 30"),
        ("RECONCILE_MINUTES", "0", "BILLING_GQL_SEPAY_RECONCILE_MINUTES must be at least 1"),
    ],
)
def test_malformed_settings_stop_startup_with_a_clear_message(
    sepay_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(f"BILLING_GQL_SEPAY_{name}", value)
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert f'billing-gql: provider "sepay" is misconfigured: {message}' in err
    assert sepay_env["BILLING_GQL_SEPAY_WEBHOOK_API_KEY"] not in err
    assert "Traceback" not in err
