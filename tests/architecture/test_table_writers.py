"""Architecture rules checked on the source: each table family is written by one store module.

The scan reads every string literal of ``billing_gql`` (the committed migrations excluded) with
:mod:`ast`, so implicitly concatenated literals and f-strings are seen as the one statement they
make, and looks for SQL writes (``INSERT INTO``, ``UPDATE``, ``DELETE FROM``) and Piccolo writes
(``Table.insert/update/delete``) of the tables below.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import billing_gql

PACKAGE = Path(billing_gql.__file__).parent

# table -> (the one module allowed to write it, its Piccolo table class)
OWNERS = {
    "checkouts": ("store/checkouts_sql.py", "Checkout"),
    "subscriptions": ("store/subscriptions_sql.py", "Subscription"),
    "payments": ("store/payments_sql.py", "Payment"),
    "invoice_items": ("store/invoice_items_sql.py", "InvoiceItem"),
    "refunds": ("store/refunds_sql.py", "Refund"),
    "invoices": ("store/invoices_sql.py", "Invoice"),
    "invoice_lines": ("store/invoices_sql.py", "InvoiceLine"),
    "invoice_number_counters": ("store/invoices_sql.py", "InvoiceNumberCounter"),
    "usage_period_closes": ("store/invoices_sql.py", "UsagePeriodClose"),
    "usage_billed": ("store/invoices_sql.py", "UsageBilled"),
    "api_keys": ("access/keys.py", "ApiKey"),
    "audit_log": ("access/audit.py", "AuditEntry"),
    "rate_limit_counters": ("access/rate_limits.py", "RateLimitCounter"),
}

_SQL_WRITE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(" + "|".join(OWNERS) + r")\b")
_ORM_WRITE = re.compile(
    r"\b(" + "|".join(cls for _, cls in OWNERS.values()) + r")\.(?:insert|update|delete)\("
)
_TABLE_OF_CLASS = {cls: table for table, (_, cls) in OWNERS.items()}


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal with its line; an f-string's fields become ``{}``."""
    found: list[tuple[int, str]] = []
    # An f-string's literal parts are read as part of it, not again on their own.
    parts = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    for node in ast.walk(tree):
        if id(node) in parts:
            continue
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                part.value
                if isinstance(part, ast.Constant) and isinstance(part.value, str)
                else "{}"
                for part in node.values
            )
            found.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
    return found


def writes_in(source: str) -> list[tuple[int, str]]:
    """(line, table) of every write to an owned table in ``source``."""
    writes = [
        (line, match.group(1))
        for line, text in _strings(ast.parse(source))
        for match in _SQL_WRITE.finditer(text)
    ]
    for number, line_text in enumerate(source.splitlines(), start=1):
        writes += [(number, _TABLE_OF_CLASS[m.group(1)]) for m in _ORM_WRITE.finditer(line_text)]
    return sorted(writes)


def _modules() -> list[Path]:
    migrations = PACKAGE / "db" / "migrations"
    return [p for p in sorted(PACKAGE.rglob("*.py")) if migrations not in p.parents]


def test_the_scan_finds_writes_however_they_are_spelt() -> None:
    source = (
        "async def f(conn, n):\n"
        '    await conn.execute("UPDATE checkouts " "SET status = 1")\n'
        '    await conn.execute(f"INSERT INTO subscriptions ({n}) VALUES ($1)")\n'
        '    await conn.execute("DELETE FROM  invoice_items WHERE id = $1")\n'
        "    await Payment.update({Payment.status: 1})\n"
        '    await conn.execute("SELECT * FROM checkouts FOR UPDATE")\n'
    )
    assert writes_in(source) == [
        (2, "checkouts"),
        (3, "subscriptions"),
        (4, "invoice_items"),
        (5, "payments"),
    ]


def test_each_table_is_written_only_by_its_store_module() -> None:
    strays = []
    written: set[str] = set()
    for path in _modules():
        relative = path.relative_to(PACKAGE).as_posix()
        for line, table in writes_in(path.read_text(encoding="utf-8")):
            if relative == OWNERS[table][0]:
                written.add(table)
            else:
                strays.append(f"billing_gql/{relative}:{line} writes {table}")
    assert strays == [], "write through the owner module instead (see OWNERS):\n" + "\n".join(
        strays
    )
    # The owners are where the writes are (the scan is not blind to them).
    assert written == set(OWNERS)
