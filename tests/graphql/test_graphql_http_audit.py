"""The graphql-http server audit (npm package graphql-http) against a real server process."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from billing_gql.testing import TestDatabase
from billing_gql.testing.server import ServerProcess

AUDIT_DIR = Path(__file__).parent / "audit"


@pytest.fixture(scope="module")
def audit_tool() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js is not installed")
    if not (AUDIT_DIR / "node_modules" / "graphql-http").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=AUDIT_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return AUDIT_DIR / "audit.mjs"


def test_graphql_http_audit_passes_every_check(
    audit_tool: Path, billing_database: TestDatabase
) -> None:
    env = {"DATABASE_URL": billing_database.url, "BILLING_GQL_ADMIN_KEYS": "k"}
    with ServerProcess(env) as server:
        run = subprocess.run(
            ["node", str(audit_tool), f"{server.url}/graphql"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    results = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert len(results) > 50, run.stdout + run.stderr
    not_ok = [r for r in results if r["status"] != "ok"]
    assert not_ok == [], not_ok
