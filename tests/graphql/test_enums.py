"""Closed lists are schema enums with the Python enums' values (the strings clients always got),
and every userErrors code written in the code base is one of ``ErrorCode``."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

import pytest
from fakes import EchoProvider

import billing_gql
from billing_gql import (
    ErrorCode,
    NotSupported,
    Provider,
    ProviderError,
    ProviderUnavailable,
    UserInputError,
    hookimpl,
)
from billing_gql.core.checkout import CheckoutPurpose
from billing_gql.core.payments import PaymentStatus
from billing_gql.core.refunds import RefundStatus
from billing_gql.errors import PluginError
from billing_gql.graphql.errors import GraphQLErrorCode
from billing_gql.plugins.settings import ProviderSettings
from billing_gql.plugins.types import ProviderCapability
from billing_gql.provider_webhooks.apply import DeliveryStatus
from billing_gql.providers.manual import ManualProvider
from billing_gql.providers.registry import ProviderRegistry, build_plugin_manager
from billing_gql.settings import PluginSettings, Settings
from billing_gql.testing import ApiClient

ROOT = Path(__file__).resolve().parents[2]

# (GraphQL type, field, its enum, the Python enum)
ENUM_FIELDS: list[tuple[str, str, str, type[StrEnum]]] = [
    ("UserError", "code", "UserErrorCode", ErrorCode),
    ("Payment", "status", "PaymentStatus", PaymentStatus),
    ("Checkout", "purpose", "CheckoutPurpose", CheckoutPurpose),
    ("WebhookDelivery", "status", "WebhookDeliveryStatus", DeliveryStatus),
    ("Provider", "capabilities", "ProviderCapability", ProviderCapability),
    ("Refund", "status", "RefundStatus", RefundStatus),
]

_TYPE = """query($name: String!) { __type(name: $name) {
  kind enumValues { name } fields { name type { ...T ofType { ...T ofType { ...T ofType { ...T } } } } } } }
fragment T on __Type { kind name }"""


def _named(type_ref: dict[str, object]) -> str:
    while type_ref.get("name") is None:
        type_ref = type_ref["ofType"]  # type: ignore[assignment]
    return str(type_ref["name"])


async def test_schema_enums_are_the_python_enums(api: ApiClient) -> None:
    for owner, field, enum_name, values in ENUM_FIELDS:
        owner_type = (await api.gql(_TYPE, {"name": owner})).ok()["__type"]
        fields = {f["name"]: f["type"] for f in owner_type["fields"]}
        assert _named(fields[field]) == enum_name, (owner, field)
        enum_type = (await api.gql(_TYPE, {"name": enum_name})).ok()["__type"]
        assert enum_type["kind"] == "ENUM"
        # A GraphQL enum serializes as its name: the names are the Python values, in order.
        assert [v["name"] for v in enum_type["enumValues"]] == [m.value for m in values]


async def test_clients_still_receive_the_same_strings(api: ApiClient) -> None:
    providers = (await api.gql("{ providers { name capabilities } }")).ok()["providers"]
    manual = next(p for p in providers if p["name"] == "manual")
    # sorted, as the plain strings they were
    assert manual["capabilities"] == sorted(ManualProvider.capabilities())
    assert {"checkout", "cancel"} <= set(manual["capabilities"])
    payload = (
        await api.gql(
            'mutation { archivePlan(code: "nope") { userErrors { field code } } }', admin=True
        )
    ).data["archivePlan"]
    assert payload["userErrors"] == [{"field": ["code"], "code": "NOT_FOUND"}]


def test_the_python_enums_match_the_database_constraints() -> None:
    """The CHECK constraints of the newest migrations list exactly the enums' values."""
    migrations = "\n".join(
        p.read_text() for p in sorted((ROOT / "billing_gql/db/migrations").glob("*.py"))
    )
    for constraint, values in [
        ("payments_status_check", PaymentStatus),
        ("checkouts_purpose_check", CheckoutPurpose),
        ("webhook_deliveries_status_check", DeliveryStatus),
        ("refunds_status_check", RefundStatus),
    ]:
        # the last definition of the constraint wins (a later migration replaces it)
        start = migrations.rindex(constraint)
        listed = re.search(r"IN \(([^)]*)\)", migrations[start:], re.S)
        assert listed is not None, constraint
        found = re.findall(r"'([a-z_]+)'", listed.group(1))
        assert sorted(found) == sorted(m.value for m in values), constraint


def test_user_input_error_takes_an_error_code_or_its_string() -> None:
    from_string = UserInputError("INVALID_STATE", "no", ["x"])
    assert from_string.code is ErrorCode.INVALID_STATE
    assert from_string.code == "INVALID_STATE"
    assert repr(from_string) == "UserInputError('INVALID_STATE', 'no', ['x'])"
    assert UserInputError(ErrorCode.NOT_FOUND, "gone").code is ErrorCode.NOT_FOUND
    with pytest.raises(ValueError, match='unknown user error code "NOPE"'):
        UserInputError("NOPE", "no")
    assert ProviderError("refused").code is ErrorCode.PROVIDER_ERROR
    assert ProviderError("refused", code="PROVIDER_REF_MISSING").code is (
        ErrorCode.PROVIDER_REF_MISSING
    )
    assert ProviderUnavailable("down").code is ErrorCode.PROVIDER_UNAVAILABLE
    assert NotSupported("no").code is ErrorCode.NOT_SUPPORTED
    assert "ErrorCode" in billing_gql.__all__


# -- every code in the source is in the enum -------------------------------------------------

_CODE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")
_SETTING_READS = frozenset({"get", "int", "setdefault", "getenv", "pop"})
"""Calls whose upper-case first argument is a setting's name, not a code."""
_CODE_NAMES = frozenset({"code", "error_code", "too_large"})


def _sources() -> list[Path]:
    roots = [ROOT / "billing_gql", *ROOT.glob("plugins/*/billing_gql_*"), *ROOT.glob("examples/*")]
    return [
        p
        for root in roots
        for p in root.rglob("*.py")
        if not {"tests", "migrations", ".venv"} & set(p.relative_to(ROOT).parts)
    ]


def _strings(node: ast.AST | None) -> list[str]:
    if node is None:
        return []
    return [
        c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)
    ]


def _written_codes(path: Path) -> list[tuple[int, str]]:
    """Code-shaped strings passed first to a call, as ``code=``/``too_large=``, as such a
    parameter's default, or assigned to ``code``/``error_code``; and SQL ``error_code = '…'``."""
    text = path.read_text()
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            first = node.args[0] if node.args else None
            if name not in _SETTING_READS and isinstance(first, ast.Constant):
                found += [(node.lineno, s) for s in _strings(first) if _CODE.match(s)]
            for kw in node.keywords:
                if kw.arg in _CODE_NAMES:
                    found += [(node.lineno, s) for s in _strings(kw.value) if s.isupper()]
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {getattr(t, "id", None) or getattr(t, "attr", None) for t in targets}
            if names & _CODE_NAMES:
                found += [(node.lineno, s) for s in _strings(node.value) if s.isupper()]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            positional = args.posonlyargs + args.args
            defaulted = positional[len(positional) - len(args.defaults) :]
            pairs = list(zip(defaulted, args.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
            for arg, default in pairs:
                if arg.arg in _CODE_NAMES:
                    found += [(node.lineno, s) for s in _strings(default) if s.isupper()]
    for match in re.finditer(r"error_code\s*=\s*'([A-Z_]+)'", text):
        found.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


def test_every_user_error_code_written_in_the_source_is_an_error_code() -> None:
    known = {m.value for m in ErrorCode} | {m.value for m in GraphQLErrorCode}
    written = {(p, line, code) for p in _sources() for line, code in _written_codes(p)}
    unknown = sorted(f"{p.relative_to(ROOT)}:{line}: {code}" for p, line, code in written)
    unknown = [u for u in unknown if u.rsplit(": ", 1)[1] not in known]
    assert not unknown, unknown
    # The scan does find the codes (a plugin's, a helper's, a default, SQL), so it can fail.
    codes = {code for _, _, code in written}
    assert {"PROVIDER_REF_MISSING", "TIMESTAMP_IN_FUTURE", "QUANTITY_TOO_LARGE"} <= codes
    writer = ROOT / "billing_gql" / "store" / "checkouts_sql.py"
    assert "ALREADY_SUBSCRIBED" in {c for p, _, c in written if p == writer}
    assert len(written) > 140


def test_the_scan_reports_an_unknown_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('problems.add("NO_SUCH_CODE", "x")\nraise ProviderError("x", code="OOPS_X")\n')
    assert [code for _, code in _written_codes(bad)] == ["NO_SUCH_CODE", "OOPS_X"]


# -- provider capabilities ---------------------------------------------------------------------


class Teleporter(EchoProvider):
    name = "teleporter"

    @classmethod
    def capabilities_for(cls, settings: ProviderSettings) -> frozenset[str]:
        return cls.capabilities() | {"teleport"}


class TeleporterPlugin:
    @hookimpl
    def register_providers(self) -> Sequence[type[Provider]]:
        return [Teleporter]


def test_a_capability_outside_the_closed_list_stops_startup() -> None:
    settings = Settings(plugins=PluginSettings(env={}, load_entry_points=False))
    pm, origins = build_plugin_manager(settings, [TeleporterPlugin()])
    with pytest.raises(PluginError, match=r"\"teleporter\".*unknown capabilities \['teleport'\]"):
        ProviderRegistry.build(pm, origins, settings)
