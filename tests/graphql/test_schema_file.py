"""The committed SDL is what the code serves."""

import subprocess
import sys
from pathlib import Path

from billing_gql.graphql.schema import export_sdl

ROOT = Path(__file__).resolve().parents[2]


def test_schema_graphql_matches_code() -> None:
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == export_sdl(), "run: billing-gql export-schema > schema.graphql"


def test_export_schema_command_prints_the_same() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "billing_gql.cli", "export-schema"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out == (ROOT / "schema.graphql").read_text()
