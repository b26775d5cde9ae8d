"""Messages never show a Python repr: an f-string's ``!r`` (``'pro'``, ``Decimal('29.999')``)
inside a message handed to an error, a user error or a ``Problems.add`` quotes the way Python
does, not the way a client or an operator reads. ``billing_gql.money.shown`` quotes a value
("pro", "29.999") instead."""

from __future__ import annotations

import ast
from pathlib import Path

import billing_gql

PACKAGE = Path(billing_gql.__file__).parent


def _callee(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _reprs(tree: ast.AST) -> list[int]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _callee(node)
        if not (name.endswith(("Error", "Errors", "Unavailable", "Invalid")) or name == "add"):
            continue
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            for sub in ast.walk(arg):
                if isinstance(sub, ast.FormattedValue) and sub.conversion == ord("r"):
                    found.append(sub.lineno)
    return found


def test_no_message_formats_a_value_with_its_repr() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "migrations" not in path.parts
        for line in _reprs(ast.parse(path.read_text()))
    ]
    assert offenders == [], offenders


def test_the_scan_finds_a_repr() -> None:
    source = 'raise UserInputError("NOT_FOUND", f"no plan {code!r}")\np.add("X", f"{v!r}")'
    assert _reprs(ast.parse(source)) == [1, 2]
