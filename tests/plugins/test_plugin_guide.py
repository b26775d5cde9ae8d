"""The plugin guide (``docs/plugins.md``) keeps up with the code: this fails when a hook, a
public ``Provider`` method or attribute, an ``EventKind``, a name of the public API, a
conformance hook or test, a capability or a user error code is missing from it — with the exact
signature where there is one — and when the README stops linking it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import billing_gql
from billing_gql.errors import ErrorCode
from billing_gql.plugins import hookspecs
from billing_gql.plugins.provider import Provider, ProviderContext
from billing_gql.plugins.types import (
    METADATA_CHECKOUT_ID,
    METADATA_CUSTOMER_ID,
    METADATA_SUBSCRIPTION_ID,
    EventKind,
)

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugins.md"
PACKAGE = ROOT / "billing_gql"


def _normalized(text: str) -> str:
    """Whitespace-free, with Markdown table pipes unescaped: signatures compare as written."""
    return re.sub(r"\s+", "", text.replace("\\|", "|"))


def _functions(
    path: Path, class_name: str | None = None
) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body = tree.body
    if class_name is not None:
        [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
        body = cls.body
    return [n for n in body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}"


def _class_attributes(path: Path, class_name: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    return [
        n.target.id
        for n in cls.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    ]


def _sections(text: str) -> dict[str, str]:
    """Third-level sections by heading: its first code span (``### `name` ``), else its text."""
    found: dict[str, str] = {}
    for part in re.split(r"(?m)^### ", text)[1:]:
        heading, _, body = part.partition("\n")
        match = re.match(r"`([^`]+)`", heading.strip())
        found[match.group(1) if match else heading.strip()] = body
    return found


def _hooks() -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    nodes = _functions(PACKAGE / "plugins" / "hookspecs.py")
    specs = [n for n in nodes if hasattr(getattr(hookspecs, n.name), "billing_gql_spec")]
    assert {n.name for n in specs} >= {"register_providers", "choose_provider"}
    return specs


def _all_capabilities() -> set[str]:
    class Everything(Provider):
        name = "everything"
        hosted_checkout = True
        bank_transfer = True
        charges_renewals = True
        refunds = True

    for method in (
        "cancel_subscription",
        "resume_subscription",
        "pause_subscription",
        "change_subscription_plan",
        "create_portal_session",
        "report_usage",
        "reconcile",
    ):
        setattr(Everything, method, lambda self, *a, **k: None)
    return set(Everything.capabilities())


def missing_from_guide(text: str) -> list[str]:
    """What the guide ``text`` fails to document (empty: everything is there)."""
    flat = _normalized(text)
    missing: list[str] = []

    def need(snippet: str, what: str) -> None:
        if _normalized(snippet) not in flat:
            missing.append(what)

    sections = _sections(text)
    for hook in _hooks():
        section = sections.get(hook.name)
        if section is None:
            missing.append(f"hook {hook.name}: no '### `{hook.name}`' section")
            continue
        if _normalized(_signature(hook)) not in _normalized(section):
            missing.append(f"hook {hook.name}: its signature {_signature(hook)}")
        firstresult = getattr(hookspecs, hook.name).billing_gql_spec.get("firstresult")
        if firstresult and "`None` means" not in section:
            missing.append(f"hook {hook.name}: what `None` means")
        if not re.search(rf"@hookimpl[^\n]*\n(async )?def {hook.name}\(", section):
            missing.append(f"hook {hook.name}: an example implementation")

    provider_py = PACKAGE / "plugins" / "provider.py"
    for method in _functions(provider_py, "Provider"):
        if method.name.startswith("_") and method.name != "__init__":
            continue
        need(_signature(method), f"Provider.{method.name}: its signature {_signature(method)}")
    for attribute in _class_attributes(provider_py, "Provider"):
        need(f"`{attribute}`", f"Provider.{attribute}")
    for context_field in ProviderContext.__dataclass_fields__:
        need(f"`{context_field}`", f"ProviderContext.{context_field}")

    event_kinds = sections.get("Event kinds", "")
    for kind in EventKind:
        if f"`{kind.value}`" not in event_kinds:
            missing.append(f"EventKind {kind.name} (`{kind.value}`) in the Event kinds table")

    for name in billing_gql.__all__:
        need(f"`{name}`", f"public name {name}")
    for key in (METADATA_CHECKOUT_ID, METADATA_CUSTOMER_ID, METADATA_SUBSCRIPTION_ID):
        need(f"`{key}`", f"metadata key {key}")
    for code in sorted(ErrorCode):
        need(f"`{code}`", f"user error code {code}")
    for capability in sorted(_all_capabilities()):
        need(f"`{capability}`", f"capability {capability}")

    conformance_py = PACKAGE / "testing" / "conformance.py"
    methods = _functions(conformance_py, "ProviderConformance")
    names = [m.name for m in methods]
    scenario_hooks = methods[: names.index("conformance")]  # declared before the fixture
    for method in scenario_hooks:
        need(_signature(method), f"conformance hook {method.name}: {_signature(method)}")
    for method in methods:
        if not method.name.startswith("_") and method.name != "conformance":
            named = f"`{method.name}`" in text or f"def {method.name}(" in text
            if not named:
                missing.append(f"ProviderConformance.{method.name}")
    for attribute in _class_attributes(conformance_py, "ProviderConformance"):
        need(f"`{attribute}`", f"ProviderConformance.{attribute}")
    return missing


def test_the_guide_documents_every_hook_method_event_and_public_name() -> None:
    assert missing_from_guide(GUIDE.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("cut", "expected"),
    [
        (r"(?ms)^### `choose_provider`.*?(?=^### )", "hook choose_provider: no"),
        (
            r"def map_provider_grant\(provider: str, grant: ProviderGrant\)",
            "hook map_provider_grant",
        ),
        (r"\*\*`None` means \"no opinion\"\*\*", "hook choose_provider: what `None` means"),
        (r"`refund\.succeeded`", "EventKind REFUND_SUCCEEDED"),
        (r"async def resume_subscription\(self, ref: SubscriptionRef\)", "resume_subscription"),
        (r"`webhook_ack`", "Provider.webhook_ack"),
        (r"def fail_next_call\(self", "conformance hook fail_next_call"),
        (r"`StoredDelivery`", "public name StoredDelivery"),
    ],
)
def test_the_check_fails_when_something_is_cut_from_the_guide(cut: str, expected: str) -> None:
    text = GUIDE.read_text(encoding="utf-8")
    cut_text, count = re.subn(cut, "", text)
    assert count, f"the guide no longer has {cut!r}: update this test"
    assert any(expected in problem for problem in missing_from_guide(cut_text)), cut


def test_the_readme_links_the_guide_from_its_provider_plugins_section() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Provider plugins", 1)[1].split("\n## ", 1)[0]
    assert "(docs/plugins.md)" in section


def test_the_guides_relative_links_resolve() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for target in re.findall(r"\]\((\.\./[^)#]+)\)", text):
        assert (GUIDE.parent / target).resolve().exists(), target
