"""Sizes (architecture issue #12): no module in ``billing_gql`` over 500 lines and no function
over 80 lines, unless it is allow-listed below with its reason.

The committed migrations (``billing_gql/db/migrations``) and the test kit
(``billing_gql/testing``: the provider conformance suite and fakes) are not counted. A module's
size is its number of lines; a function's, from its ``def`` line to its last line (docstring
and comments included, decorators not). Each allow-list entry is also named in the "Sizes"
section of docs/architecture.md, and an entry that is no longer over its limit must be removed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import billing_gql

PACKAGE = Path(billing_gql.__file__).resolve().parent
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
EXCLUDED = ("db/migrations/", "testing/")
MODULE_LINES = 500
FUNCTION_LINES = 80

ALLOWED_MODULES: dict[str, str] = {
    # path under billing_gql/ -> reason
}

ALLOWED_FUNCTIONS: dict[str, str] = {
    # "path under billing_gql/::qualified name" -> reason
    "metering/validation.py::validate_batch": (
        "recordUsage's per-event loop: a helper call per event would be work per event on the "
        "hot path (bench/usage_ingest.py)"
    ),
}


def _functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, int]]:
    """Every function and method in ``tree``, nested ones included: (qualified name, lines)."""
    found: list[tuple[str, int]] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = prefix + node.name
            assert node.end_lineno is not None
            found.append((name, node.end_lineno - node.lineno + 1))
            found += _functions(node, name + ".")
        elif isinstance(node, ast.ClassDef):
            found += _functions(node, prefix + node.name + ".")
        else:
            found += _functions(node, prefix)
    return found


def _sizes() -> tuple[dict[str, int], dict[str, int]]:
    """The modules over :data:`MODULE_LINES` and the functions over :data:`FUNCTION_LINES`."""
    modules: dict[str, int] = {}
    functions: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name.startswith(EXCLUDED):
            continue
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > MODULE_LINES:
            modules[name] = lines
        for function, length in _functions(ast.parse(source, filename=str(path))):
            if length > FUNCTION_LINES:
                functions[f"{name}::{function}"] = length
    return modules, functions


def test_no_module_is_over_500_lines_unless_allowed() -> None:
    modules, _ = _sizes()
    over = {name: lines for name, lines in modules.items() if name not in ALLOWED_MODULES}
    assert not over, (
        f"modules over {MODULE_LINES} lines: {over}; split them by concern, or add them to "
        "ALLOWED_MODULES with a reason (and to docs/architecture.md#sizes)"
    )


def test_no_function_is_over_80_lines_unless_allowed() -> None:
    _, functions = _sizes()
    over = {name: lines for name, lines in functions.items() if name not in ALLOWED_FUNCTIONS}
    assert not over, (
        f"functions over {FUNCTION_LINES} lines: {over}; break them into named steps, or add "
        "them to ALLOWED_FUNCTIONS with a reason (and to docs/architecture.md#sizes)"
    )


def test_every_allowed_entry_is_still_over_its_limit() -> None:
    modules, functions = _sizes()
    stale = sorted(
        [name for name in ALLOWED_MODULES if name not in modules]
        + [name for name in ALLOWED_FUNCTIONS if name not in functions]
    )
    assert not stale, f"no longer over the limit (or gone): remove {stale} from the allow-lists"


def test_every_allowed_entry_is_named_in_the_architecture_docs() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    sizes = text[text.index("\n## Sizes\n") + 1 :].split("\n## ", 1)[0]
    missing = [
        entry
        for entry in [*ALLOWED_MODULES, *ALLOWED_FUNCTIONS]
        if f"`{entry.replace('::', ': ')}`" not in sizes
    ]
    assert not missing, f"docs/architecture.md's Sizes section does not name {missing}"


def test_function_sizes_count_from_def_to_the_last_line() -> None:
    source = (
        "def f():\n"
        + "".join(f"    x{i} = {i}\n" for i in range(79))
        + "class A:\n    @staticmethod\n    async def m():\n"
        + "".join(f"        x{i} = {i}\n" for i in range(80))
        + "        def inner():\n            pass\n"
    )
    assert dict(_functions(ast.parse(source))) == {"f": 80, "A.m": 83, "A.m.inner": 2}
