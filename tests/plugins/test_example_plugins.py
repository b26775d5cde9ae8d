"""The outside-plugin path, end to end, with the example plugin ``billing-gql-acmepay``
(``examples/billing-gql-acmepay``), installed as its own distribution (``scripts/_venv.sh``
installs every ``examples/*/`` package):

- it imports nothing of billing-gql but the public plugin API (and, in its tests, the kit);
- a real ``billing-gql plugins`` and a real ``billing-gql serve`` find it through its entry
  point — scanning on, ``BILLING_GQL_PLUGINS`` unset — and report its distribution, version and
  whether it is configured, which its settings decide.
"""

from __future__ import annotations

import os
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing_gql.testing import ServerProcess, TestDatabase, private_imports, run_cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.parent for p in ROOT.glob("examples/*/pyproject.toml"))
ACMEPAY = ROOT / "examples" / "billing-gql-acmepay"
ADMIN = "example-plugins-admin-key"
SETTINGS = {
    "BILLING_GQL_ACMEPAY_API_KEY": "ak_test_example_plugins_key",
    "BILLING_GQL_ACMEPAY_WEBHOOK_SECRET": "whsec_example_plugins_secret",
}
PROVIDERS = "{ providers { name displayName configured currencies capabilities } }"


def _packages(example: Path) -> list[Path]:
    return [p for p in example.iterdir() if (p / "__init__.py").is_file()]


def test_there_is_an_example_plugin_with_its_own_distribution() -> None:
    assert ACMEPAY in EXAMPLES
    project = tomllib.loads((ACMEPAY / "pyproject.toml").read_text())["project"]
    assert project["name"] == "billing-gql-acmepay"
    assert project["entry-points"]["billing_gql"] == {"acmepay": "billing_gql_acmepay.plugin"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_plugins_import_only_the_public_api(example: Path) -> None:
    modules = [m for package in _packages(example) for m in sorted(package.rglob("*.py"))]
    assert modules, f"{example.name} has no package"
    assert private_imports(modules) == []
    assert private_imports((example / "tests").rglob("*.py"), kit=True) == []


def test_the_import_scan_catches_a_private_import(tmp_path: Path) -> None:
    # The scan above must be able to fail: a module reaching into billing_gql's internals.
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "import importlib\nfrom billing_gql import Provider, Money\n"
        "from billing_gql import Runtime\n"
        "from billing_gql.db import Database\n"
        "engine = importlib.import_module('billing_gql.applier.engine')\n"
        "log = logging.getLogger('billing_gql.provider.sneaky')  # a name, not an import\n"
        "from billing_gql.testing import make_api\n"
    )
    assert sorted(private_imports([sneaky])) == [
        "sneaky.py imports Runtime from billing_gql",
        "sneaky.py imports billing_gql.applier.engine",
        "sneaky.py imports billing_gql.db",
        "sneaky.py imports billing_gql.testing",
    ]
    assert "sneaky.py imports billing_gql.testing" not in private_imports([sneaky], kit=True)
    # A module allowed whole (a first-party package's end-to-end tests) is allowed, no more.
    assert sorted(private_imports([sneaky], allow=["billing_gql.db"])) == [
        "sneaky.py imports Runtime from billing_gql",
        "sneaky.py imports billing_gql.applier.engine",
        "sneaky.py imports billing_gql.testing",
    ]


def test_the_import_scan_catches_a_private_sdk_module(tmp_path: Path) -> None:
    # A plugin built on a provider's SDK keeps to the SDK's public API.
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "import stripe\nfrom stripe import StripeClient, HTTPClient\n"
        "from stripe._http_client import HTTPXClient\n"
        "import polar.v2026_10._internal\n"
        "from polar.base import _retort, AsyncClientBase\n"
        "secure = stripe._util.secure_compare\n"
        "version = stripe.__version__\n"
        "from other._private import thing\n"
    )
    assert sorted(private_imports([sneaky], sdks=("stripe", "polar"))) == [
        "sneaky.py imports _retort from polar.base",
        "sneaky.py imports polar.v2026_10._internal",
        "sneaky.py imports stripe._http_client",
        "sneaky.py uses stripe._util",
    ]
    assert private_imports([sneaky]) == []


def _installed() -> metadata.Distribution:
    try:
        dist = metadata.distribution("billing-gql-acmepay")
    except metadata.PackageNotFoundError:  # pragma: no cover - a setup problem, said plainly
        pytest.fail(
            "billing-gql-acmepay is not installed: scripts/test installs it (scripts/_venv.sh), "
            "or run pip install -e examples/billing-gql-acmepay"
        )
    return dist


def test_the_installed_distribution_is_this_example() -> None:
    dist = _installed()
    project = tomllib.loads((ACMEPAY / "pyproject.toml").read_text())["project"]
    assert dist.version == project["version"]
    [entry] = [ep for ep in dist.entry_points if ep.group == "billing_gql"]
    assert (entry.name, entry.value) == ("acmepay", "billing_gql_acmepay.plugin")


def _environment(**extra: str | None) -> dict[str, str | None]:
    """This environment without any BILLING_GQL_* variable (so no allow-list, no provider
    settings leak in), plus ``extra``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BILLING_GQL_")}
    env.update(extra)
    return env


def test_billing_gql_plugins_lists_acmepay_from_its_entry_point(
    billing_database: TestDatabase,
) -> None:
    version = _installed().version
    caps = "cancel,checkout,hosted_checkout,reconcile,recurring,refund,resume"
    bare = run_cli("plugins", env=_environment(DATABASE_URL=billing_database.url))
    assert bare.returncode == 0, bare.stderr
    assert (
        f"acmepay\tbilling-gql-acmepay {version}\tnot configured (missing "
        f"BILLING_GQL_ACMEPAY_API_KEY, BILLING_GQL_ACMEPAY_WEBHOOK_SECRET)\t{caps}"
    ) in bare.stdout.splitlines()
    half = run_cli(
        "plugins",
        env=_environment(
            DATABASE_URL=billing_database.url,
            BILLING_GQL_ACMEPAY_API_KEY=SETTINGS["BILLING_GQL_ACMEPAY_API_KEY"],
        ),
    )
    assert (
        f"acmepay\tbilling-gql-acmepay {version}\tnot configured (missing "
        f"BILLING_GQL_ACMEPAY_WEBHOOK_SECRET)\t{caps}"
    ) in half.stdout.splitlines()
    configured = run_cli("plugins", env=_environment(DATABASE_URL=billing_database.url, **SETTINGS))
    assert configured.returncode == 0, configured.stderr
    assert (
        f"acmepay\tbilling-gql-acmepay {version}\tconfigured\t{caps}"
        in configured.stdout.splitlines()
    )
    for run in (bare, half, configured):
        for secret in SETTINGS.values():
            assert secret not in run.stdout + run.stderr


def _providers(http: httpx.Client) -> dict[str, Any]:
    response = http.post("/graphql", json={"query": PROVIDERS})
    assert response.status_code == 200, response.text
    return {p["name"]: p for p in response.json()["data"]["providers"]}


def test_a_served_instance_discovers_acmepay_and_its_settings_decide_configured(
    billing_database: TestDatabase,
) -> None:
    base = _environment(DATABASE_URL=billing_database.url, BILLING_GQL_ADMIN_KEYS=ADMIN)
    with ServerProcess(base, timeout=120) as server, httpx.Client(base_url=server.url) as http:
        acmepay = _providers(http)["acmepay"]
        assert acmepay["configured"] is False and acmepay["displayName"] == "AcmePay"
        # Unconfigured: its webhook route is not open.
        assert http.post("/webhooks/acmepay", content=b"{}").status_code == 404
    with (
        ServerProcess({**base, **SETTINGS}, timeout=120) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert _providers(http)["acmepay"] == {
            "name": "acmepay",
            "displayName": "AcmePay",
            "configured": True,
            "currencies": ["USD", "EUR", "GBP"],
            "capabilities": [
                "cancel",
                "checkout",
                "hosted_checkout",
                "reconcile",
                "recurring",
                "refund",
                "resume",
            ],
        }
        # The route is open now, and the plugin checks signatures: unsigned is 401.
        assert http.post("/webhooks/acmepay", content=b"{}").status_code == 401
    output = "\n".join(server.output)
    assert all(secret not in output for secret in SETTINGS.values())
