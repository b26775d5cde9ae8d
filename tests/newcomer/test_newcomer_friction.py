"""What a newcomer met (issue #19, part 10), each pinned down: the set-up scripts install only
when something changed, `serve` starts quietly and refuses a bad port at once, and the API's
refusals say what is wrong in the shape a client expects."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from billing_helpers import make_customer, make_usd_plan, session_for, subscribe

from billing_gql.testing import ApiClient, ServerProcess, TestDatabase, run_cli

ROOT = Path(__file__).resolve().parents[2]


# --- scripts/_venv.sh ---------------------------------------------------------------------


def _fake_venv(tmp: Path) -> Path:
    """A virtualenv whose python runs the real one, except ``-m pip``, which it only logs."""
    venv = tmp / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -m ] && [ "$2" = pip ]; then echo "$@" >> "{tmp}/pip.log"; exit 0; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    return venv


def _project(tmp: Path) -> Path:
    """A copy of the files _venv.sh reads: the scripts and every pyproject.toml."""
    project = tmp / "project"
    for source in [ROOT / "pyproject.toml", *ROOT.glob("*/*/pyproject.toml")]:
        target = project / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    shutil.copytree(ROOT / "scripts", project / "scripts")
    return project


def _source_venv(project: Path, venv: Path, role: str) -> str:
    env = {**os.environ, "BILLING_GQL_VENV": str(venv), "BILLING_GQL_VENV_ROLE": role}
    done = subprocess.run(
        ["bash", "-c", "source scripts/_venv.sh"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stderr


def _pip_calls(tmp: Path) -> list[str]:
    log = tmp / "pip.log"
    return log.read_text().splitlines() if log.exists() else []


def test_venv_installs_only_when_the_dependencies_change(tmp_path: Path) -> None:
    venv, project = _fake_venv(tmp_path), _project(tmp_path)
    assert "installing" in _source_venv(project, venv, "test")
    assert len(_pip_calls(tmp_path)) == 1
    # Nothing changed: no pip at all (scripts/serve used to spend 17 s here on every start).
    assert _source_venv(project, venv, "test") == ""
    assert len(_pip_calls(tmp_path)) == 1
    # A dependency changed in any pyproject.toml: install again, once.
    plugin = next(project.glob("plugins/*/pyproject.toml"))
    plugin.write_text(plugin.read_text() + "\n# changed\n")
    _source_venv(project, venv, "test")
    _source_venv(project, venv, "test")
    assert len(_pip_calls(tmp_path)) == 2
    # A fresh virtualenv (CI's) has no stamp: it installs.
    other = tmp_path / "fresh"
    shutil.copytree(venv, other)
    (other / ".billing-gql-install-test").unlink()
    _source_venv(project, other, "test")
    assert len(_pip_calls(tmp_path)) == 3


def test_serve_installs_no_example_plugin(tmp_path: Path) -> None:
    venv, project = _fake_venv(tmp_path), _project(tmp_path)
    _source_venv(project, venv, "serve")
    _source_venv(project, venv, "test")
    serve, test = _pip_calls(tmp_path)
    assert "examples/" not in serve and "[test]" not in serve
    assert "plugins/stripe/" in serve
    assert "examples/billing-gql-acmepay/" in test
    assert (ROOT / "scripts" / "serve").read_text().count("BILLING_GQL_VENV_ROLE=serve") == 1


# --- billing-gql serve: a bad port, a quiet start -------------------------------------------


def test_a_busy_port_stops_serve_at_once_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(
            "serve", "--port", str(port),
            env={"DATABASE_URL": None, "BILLING_GQL_DATA_DIR": str(tmp_path / "data")},
        )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == f"billing-gql: cannot listen on 127.0.0.1:{port}: address already in use"
    # Refused before the database started: no embedded PostgreSQL, no migrations.
    assert "PostgreSQL" not in done.stderr and "migration" not in done.stderr
    assert not (tmp_path / "data").exists()


def test_an_invalid_port_or_host_stops_serve_with_one_line() -> None:
    for args, reason in [
        (["--port", "70000"], "--port must be a number from 0 to 65535, got 70000"),
        (["--port", "http"], '--port must be a number from 0 to 65535, got "http"'),
        (["--host", "256.1.1.1", "--port", "0"], "cannot listen on 256.1.1.1:0"),
    ]:
        done = run_cli("serve", *args, env={"DATABASE_URL": "postgresql://127.0.0.1:1/none"})
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(f"billing-gql: {reason}")
        assert "Traceback" not in done.stderr


def test_serve_says_little_before_listening(tmp_path: Path) -> None:
    """The embedded PostgreSQL's first start (initdb and pg_ctl output) stays out of the log."""
    env = {
        "DATABASE_URL": None,
        "BILLING_GQL_DATA_DIR": str(tmp_path / "data"),
        "BILLING_GQL_ADMIN_KEYS": "k",
        "BILLING_GQL_REDIRECT_ORIGINS": "https://app.example.com",
    }
    with ServerProcess(env, timeout=120) as server:
        before = server.output[: server.output.index(f"listening on {server.url}")]
    assert len(before) <= 4, "\n".join(before)
    text = "\n".join(before)
    for noise in ("initdb", "pg_ctl", "Success", "XDG_RUNTIME_DIR", "uvicorn", "2026-11-22T"):
        assert noise not in text, text


# --- the API's refusals ---------------------------------------------------------------------


async def test_a_body_over_the_limit_gets_a_graphql_error(api: ApiClient) -> None:
    body = json.dumps({"query": "{ plans { code } }", "variables": {"x": "a" * (3 << 20)}})
    response = await api.http.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    errors = response.json()["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["REQUEST_TOO_LARGE"]
    assert "larger than" in errors[0]["message"]
    hook = await api.post_webhook("manual", b"x" * (2 << 20), {})
    assert hook.status_code == 413
    assert hook.json()["ok"] is False


async def test_an_authorization_header_without_bearer_says_so(api: ApiClient) -> None:
    for header in ("Token abc", "abc", "Bearer", "Basic dXNlcjpwdw=="):
        response = await api.http.post(
            "/graphql",
            content=json.dumps({"query": "{ plans { code } }"}),
            headers={"content-type": "application/json", "authorization": header},
        )
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        assert '"Bearer <token>"' in error["message"], (header, error)
    unknown = await api.gql("{ plans { code } }", token="no-such-token")
    assert unknown.errors[0]["message"] == "the token is unknown or expired"


async def test_viewer_currency_is_set_once_the_customer_bought(api: ApiClient) -> None:
    await make_usd_plan(api)
    customer = await make_customer(api)
    token = await session_for(api, customer)
    assert (await api.gql("{ viewer { currency } }", token=token)).ok() == {
        "viewer": {"currency": None}
    }
    await subscribe(api, customer)
    assert (await api.gql("{ viewer { currency } }", token=token)).ok() == {
        "viewer": {"currency": "USD"}
    }


async def test_a_chosen_currency_is_kept(api: ApiClient, clean_database: TestDatabase) -> None:
    await make_usd_plan(api)
    customer = await make_customer(api, currency="EUR")
    await subscribe(api, customer, currency="USD")
    data = await api.admin("query($id: ID!) { customer(id: $id) { currency } }", {"id": customer})
    assert data == {"customer": {"currency": "EUR"}}
