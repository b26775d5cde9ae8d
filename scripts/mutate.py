"""Mutation check of the pure money arithmetic: ``scripts/mutation`` (see README, Testing).

Each mutant is one small change to one target (an operator swapped, a comparison flipped, a
constant moved by one, ``and``/``or`` swapped, ``min``/``max`` swapped, a ``not`` or a minus
dropped, a return value replaced by ``None``). For each, pytest runs the pure arithmetic tests
with the mutated module imported in place of the real one (this file is also the pytest plugin
that swaps it in: ``-p mutate``). A mutant is killed when a test fails or it times out.

Mutants no test can tell apart from the original are listed in ``scripts/mutation-equivalents``,
one a line with the reason, and left out of the score. The command exits 1 when under 95 % of
the other mutants are killed (or a listed equivalent no longer exists, so the list stays true).

    scripts/mutation                 # everything (a few minutes on 2 cores)
    scripts/mutation --list          # the mutants, without running them
    scripts/mutation --only pricing  # the mutants whose key contains "pricing"
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.abc
import importlib.machinery
import importlib.util
import marshal
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "scripts" / "mutation-equivalents"
THRESHOLD = 0.95
TESTS = [
    "tests/core/test_money.py",
    "tests/usage/test_usage_pricing.py",
    "tests/core/test_periods.py",
    "tests/core/test_proration.py",
]


@dataclass(frozen=True)
class Target:
    path: str
    module: str
    functions: frozenset[str] | None = None  # None: the whole module


TARGETS = [
    Target("billing_gql/money.py", "billing_gql.money"),
    Target("billing_gql/usage/pricing.py", "billing_gql.usage.pricing"),
    Target("billing_gql/core/periods.py", "billing_gql.core.periods"),
    # The rest of the module is database code, tested against PostgreSQL elsewhere.
    Target(
        "billing_gql/subscriptions/plan_change.py",
        "billing_gql.subscriptions.plan_change",
        frozenset({"proration_minor"}),
    ),
]

_BINOPS: dict[type[ast.operator], list[type[ast.operator]]] = {
    ast.Add: [ast.Sub],
    ast.Sub: [ast.Add],
    ast.Mult: [ast.Div, ast.Add],
    ast.Div: [ast.Mult],
    ast.FloorDiv: [ast.Div, ast.Mult],
    ast.Mod: [ast.FloorDiv],
}
_CMPOPS: dict[type[ast.cmpop], list[type[ast.cmpop]]] = {
    ast.Lt: [ast.LtE, ast.GtE],
    ast.LtE: [ast.Lt, ast.Gt],
    ast.Gt: [ast.GtE, ast.LtE],
    ast.GtE: [ast.Gt, ast.Lt],
    ast.Eq: [ast.NotEq],
    ast.NotEq: [ast.Eq],
    ast.In: [ast.NotIn],
    ast.NotIn: [ast.In],
    ast.Is: [ast.IsNot],
    ast.IsNot: [ast.Is],
}
_SWAPPED_CALLS = {"min": "max", "max": "min"}


@dataclass
class Site:
    """One mutation opportunity in a freshly parsed tree; ``apply`` changes the tree in place."""

    target: Target
    lineno: int
    scope: str
    stmt: ast.stmt
    apply: Callable[[], None]


@dataclass(frozen=True)
class Mutant:
    target: Target
    index: int
    lineno: int
    key: str


def _header(stmt: ast.stmt) -> str:
    """The statement as one line; for a compound statement only its header."""
    if isinstance(stmt, ast.If | ast.While):
        return f"{type(stmt).__name__.lower()} {ast.unparse(stmt.test)}:"
    if isinstance(stmt, ast.For):
        return f"for {ast.unparse(stmt.target)} in {ast.unparse(stmt.iter)}:"
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        return f"def {stmt.name}({ast.unparse(stmt.args)}):"
    return " ".join(ast.unparse(stmt).split())


def _setter(obj: object, field: str, value: object) -> Callable[[], None]:
    return lambda: setattr(obj, field, value)


def _list_setter(items: list[ast.cmpop], i: int, value: ast.cmpop) -> Callable[[], None]:
    def apply() -> None:
        items[i] = value

    return apply


def _mutations(node: ast.AST) -> Iterator[Callable[[], None]]:
    if isinstance(node, ast.BinOp | ast.AugAssign):
        for op in _BINOPS.get(type(node.op), []):
            yield _setter(node, "op", op())
    elif isinstance(node, ast.Compare):
        for i, cmp in enumerate(node.ops):
            for new in _CMPOPS.get(type(cmp), []):
                yield _list_setter(node.ops, i, new())
    elif isinstance(node, ast.BoolOp):
        yield _setter(node, "op", ast.Or() if isinstance(node.op, ast.And) else ast.And())
    elif isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):  # not x -> not not x (the negation dropped)
            yield _setter(node, "operand", ast.UnaryOp(ast.Not(), node.operand))
        elif isinstance(node.op, ast.USub):
            yield _setter(node, "op", ast.UAdd())
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            yield _setter(node, "value", not node.value)
        elif isinstance(node.value, int):
            yield _setter(node, "value", node.value + 1)
            yield _setter(node, "value", node.value - 1)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id in _SWAPPED_CALLS:
            yield _setter(node.func, "id", _SWAPPED_CALLS[node.func.id])
    elif isinstance(node, ast.Return) and _returns_something(node):
        yield _setter(node, "value", ast.Constant(None))


def _returns_something(node: ast.Return) -> bool:
    value = node.value
    return value is not None and not (isinstance(value, ast.Constant) and value.value is None)


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)


def _skipped(stmt: ast.stmt) -> bool:
    """Imports, docstrings and ``__all__``: nothing arithmetic to mutate there."""
    if isinstance(stmt, ast.Import | ast.ImportFrom) or _is_docstring(stmt):
        return True
    return isinstance(stmt, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets
    )


def _sites(target: Target, tree: ast.Module) -> list[Site]:
    sites: list[Site] = []

    def visit(node: ast.AST, scope: str, stmt: ast.stmt | None, active: bool) -> None:
        if isinstance(node, ast.stmt):
            if _skipped(node):
                return
            stmt = node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope = f"{scope}.{node.name}" if scope else node.name
            if target.functions is not None and node.name in target.functions:
                active = True
            if isinstance(node, ast.ClassDef):
                children: list[ast.AST] = list(node.body)
            else:  # defaults and body; not the decorators or the annotations
                children = [*node.args.defaults, *filter(None, node.args.kw_defaults)]
                children += node.body
        elif isinstance(node, ast.AnnAssign):
            children = [node.value] if node.value is not None else []
        elif isinstance(node, ast.JoinedStr):  # f-strings are messages
            return
        else:
            children = list(ast.iter_child_nodes(node))
        if active and stmt is not None:
            lineno = getattr(node, "lineno", stmt.lineno)
            for apply in _mutations(node):
                sites.append(Site(target, lineno, scope or "<module>", stmt, apply))
        for child in children:
            visit(child, scope, stmt, active)

    visit(tree, "", None, target.functions is None)
    return sites


def _parse(target: Target) -> ast.Module:
    return ast.parse((ROOT / target.path).read_text(), filename=target.path)


def _mutate(target: Target, index: int) -> tuple[str, CodeType]:
    """The key and the compiled module of mutant ``index`` of ``target``."""
    tree = _parse(target)
    site = _sites(target, tree)[index]
    before = _header(site.stmt)
    site.apply()
    ast.fix_missing_locations(tree)
    after = _header(site.stmt)
    key = f"{target.path}::{site.scope}: {before} => {after}"
    return key, compile(tree, str(ROOT / target.path), "exec")


def collect() -> list[Mutant]:
    mutants: list[Mutant] = []
    for target in TARGETS:
        sites = _sites(target, _parse(target))
        for index, site in enumerate(sites):
            key, _ = _mutate(target, index)
            mutants.append(Mutant(target, index, site.lineno, key))
    keys = [m.key for m in mutants]
    duplicated = {k for k in keys if keys.count(k) > 1}
    if duplicated:  # two mutations reading the same would make the equivalents list ambiguous
        sys.exit(f"mutants with the same key: {sorted(duplicated)}")
    return mutants


def read_equivalents() -> dict[str, str]:
    """``key ## reason`` lines; ``#`` starts a comment line."""
    entries: dict[str, str] = {}
    for line in EQUIVALENTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, reason = line.partition(" ## ")
        if not sep or not reason.strip():
            sys.exit(f"{EQUIVALENTS.name}: needs 'key ## reason': {line}")
        entries[key.strip()] = reason.strip()
    return entries


def _pytest(env: dict[str, str], timeout: float) -> str:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    command += ["--noconftest", "-W", "ignore::pytest.PytestConfigWarning", "-p", "mutate"]
    command += TESTS
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and arguments
            command, cwd=ROOT, env=env, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    return "survived" if done.returncode == 0 else "killed"


def run(mutant: Mutant, workdir: Path, timeout: float) -> str:
    _, code = _mutate(mutant.target, mutant.index)
    path = workdir / f"{mutant.target.module}.{mutant.index}.marshal"
    path.write_bytes(marshal.dumps(code))
    env = _env()
    env["BILLING_GQL_MUTANT_MODULE"] = mutant.target.module
    env["BILLING_GQL_MUTANT_CODE"] = str(path)
    return _pytest(env, timeout)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "scripts"), env.get("PYTHONPATH")])
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # The pure tests need no other plugin (not loading them saves two thirds of each run);
    # without pytest-asyncio its ini options are unknown, which is not a failure here.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--only", default="", help="run the mutants whose key contains this")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    args = parser.parse_args(argv)

    mutants = [m for m in collect() if args.only in m.key]
    if args.list:
        for m in mutants:
            print(f"{m.target.path}:{m.lineno}  {m.key}")
        return 0
    equivalents = read_equivalents()
    stale = sorted(set(equivalents) - {m.key for m in collect()})

    started = time.monotonic()
    if _pytest(_env(), 600) != "survived":
        print("the arithmetic tests fail without any mutation; fix them first", file=sys.stderr)
        return 2
    timeout = max(30.0, 5 * (time.monotonic() - started))

    to_run = [m for m in mutants if m.key not in equivalents]
    print(f"{len(mutants)} mutants, {len(mutants) - len(to_run)} listed as equivalent; running")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        outcomes = list(pool.map(lambda m: run(m, Path(tmp), timeout), to_run))

    survivors = [m for m, o in zip(to_run, outcomes, strict=True) if o == "survived"]
    for m in survivors:
        print(f"SURVIVED {m.target.path}:{m.lineno}  {m.key}")
    for path in sorted({t.path for t in TARGETS}):
        mine = [o for m, o in zip(to_run, outcomes, strict=True) if m.target.path == path]
        print(f"{path}: {len(mine) - mine.count('survived')}/{len(mine)} killed")
    killed = len(to_run) - len(survivors)
    score = killed / len(to_run) if to_run else 1.0
    print(
        f"killed {killed - outcomes.count('timeout')}, timeout {outcomes.count('timeout')}, "
        f"survived {len(survivors)}, equivalent {len(mutants) - len(to_run)}: "
        f"score {score:.1%} of {len(to_run)} non-equivalent mutants (needs {THRESHOLD:.0%})"
    )
    for key in stale:
        print(f"STALE equivalent (no such mutant any more; update the list): {key}")
    if args.only:
        return 0
    return 0 if score >= THRESHOLD and not stale else 1


# -- the pytest plugin side: ``-p mutate`` swaps the mutant in before anything imports it ------


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, module: str, code: CodeType) -> None:
        self.module, self.code = module, code

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.module:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None:
            return None
        spec = copy.copy(spec)
        spec.loader = self
        return spec

    def exec_module(self, module: ModuleType) -> None:
        exec(self.code, module.__dict__)  # noqa: S102 - the compiled mutant of our own module


if __name__ != "__main__" and os.environ.get("BILLING_GQL_MUTANT_MODULE"):
    _name = os.environ["BILLING_GQL_MUTANT_MODULE"]
    if _name in sys.modules:
        raise RuntimeError(f"{_name} was imported before the mutant could replace it")
    _code = marshal.loads(Path(os.environ["BILLING_GQL_MUTANT_CODE"]).read_bytes())  # noqa: S302
    sys.meta_path.insert(0, _MutantFinder(_name, _code))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
