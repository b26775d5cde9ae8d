"""The invoice settings read from the environment, and the signed PDF links."""

from __future__ import annotations

import uuid

import pytest

from billing_gql.invoices.links import pdf_url, verify_pdf_link
from billing_gql.invoices.pdf import format_money
from billing_gql.settings import Settings, SettingsError


def test_invoice_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "BILLING_GQL_INVOICE_PREFIX": "ACME",
            "BILLING_GQL_SELLER_NAME": "Acme JSC",
            "BILLING_GQL_SELLER_ADDRESS": "1 Main St\\nHanoi",
            "BILLING_GQL_SELLER_TAX_ID": "0101234567",
            "BILLING_GQL_PUBLIC_URL": "https://billing.example.com/",
            "BILLING_GQL_INVOICE_LINK_TTL_SECONDS": "600",
        }
    )
    invoices = settings.invoices
    assert (invoices.prefix, invoices.seller_name, invoices.seller_tax_id) == (
        "ACME",
        "Acme JSC",
        "0101234567",
    )
    assert invoices.seller_address.splitlines() == ["1 Main St", "Hanoi"]
    assert invoices.public_url == "https://billing.example.com"
    assert Settings.from_env({}).invoices.prefix == "INV"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BILLING_GQL_INVOICE_PREFIX", "inv-x"),
        ("BILLING_GQL_INVOICE_PREFIX", "TOOLONGPREFIX1"),
        ("BILLING_GQL_PUBLIC_URL", "billing.example.com"),
        ("BILLING_GQL_INVOICE_LINK_TTL_SECONDS", "10"),
    ],
)
def test_malformed_invoice_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_signed_links_expire_and_bind_the_invoice() -> None:
    settings = Settings.from_env({"BILLING_GQL_INVOICE_LINK_SECRET": "s3cret"})
    invoice = uuid.uuid4()
    url = pdf_url(settings, invoice, now=1_000_000)
    assert url.startswith(f"/invoices/{invoice}.pdf?expires=1003600&signature=")
    signature = url.split("signature=")[1]
    assert verify_pdf_link(settings, invoice, "1003600", signature, now=1_003_600)
    assert not verify_pdf_link(settings, invoice, "1003600", signature, now=1_003_601)
    assert not verify_pdf_link(settings, uuid.uuid4(), "1003600", signature, now=1_000_000)
    assert not verify_pdf_link(settings, invoice, "1003601", signature, now=1_000_000)
    other = Settings.from_env({"BILLING_GQL_INVOICE_LINK_SECRET": "other"})
    assert not verify_pdf_link(other, invoice, "1003600", signature, now=1_000_000)


def test_money_on_the_pdf_has_the_currencys_digits() -> None:
    assert format_money(199_000, "VND") == "199,000 VND"
    assert format_money(123_450, "USD") == "1,234.50 USD"
    assert format_money(-1_400, "USD") == "-14.00 USD"
    assert format_money(1_500, "KWD") == "1.500 KWD"
