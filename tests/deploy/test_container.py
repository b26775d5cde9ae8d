"""The deployment files: the Dockerfile's install and start commands, run in a fresh
virtualenv, serve ``/healthz``; the image itself is built and started where a Docker daemon
answers (skipped otherwise); the compose file has PostgreSQL, the one-off migrations, API
replicas and a worker."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from billing_gql.testing import TestDatabase

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LISTENING = re.compile(r"listening on (http://\S+)")


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined), as (KEYWORD, rest)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def one(keyword: str) -> str:
    [value] = [rest for k, rest in instructions() if k == keyword]
    return value


def test_the_dockerfile_is_slim_non_root_and_serves() -> None:
    assert re.fullmatch(r"python:3\.1[1-9]-slim", one("FROM"))
    assert one("USER") not in ("root", "0")
    assert json.loads(one("CMD"))[:2] == ["billing-gql", "serve"]
    assert any(
        "scripts/container-install" in rest for keyword, rest in instructions() if keyword == "RUN"
    )


def test_compose_runs_postgres_migrations_replicas_and_a_worker() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert services["db"]["image"].startswith("postgres:")
    assert services["migrate"]["command"] == ["billing-gql", "migrate"]
    assert services["migrate"]["restart"] == "no"
    api = services["api"]
    assert api["command"][:2] == ["billing-gql", "serve"] and "--no-worker" in api["command"]
    assert "replicas" in api["deploy"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["command"] == ["billing-gql", "worker"]


def _install_command(venv: Path) -> list[list[str]]:
    """The RUN step's commands that install (the cleanup of /src aside), aimed at ``venv``."""
    [run] = [rest for k, rest in instructions() if k == "RUN" and "container-install" in rest]
    commands = []
    for part in run.split("&&"):
        argv = shlex.split(part)
        if "container-install" in " ".join(argv):
            commands.append([str(venv) if a == "/opt/venv" else a for a in argv])
    return commands


def _build_context(into: Path) -> None:
    """What the COPY instructions put under WORKDIR /src."""
    for keyword, rest in instructions():
        if keyword != "COPY":
            continue
        *sources, dest = rest.split()
        for source in sources:
            target = into / dest if dest != "./" else into / source
            if dest.endswith("/") and dest != "./":
                target = into / dest / Path(source).name
            path = ROOT / source
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(
                    path,
                    target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tests"),
                )
            else:
                shutil.copy2(path, target)


def test_the_install_and_start_commands_serve_healthz(
    tmp_path: Path, billing_database: TestDatabase
) -> None:
    src, venv = tmp_path / "src", tmp_path / "venv"
    _build_context(src)
    for command in _install_command(venv):
        done = subprocess.run(command, cwd=src, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
    argv = json.loads(one("CMD"))
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = "0"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BILLING_GQL_")},
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "DATABASE_URL": billing_database.url,
        "BILLING_GQL_ADMIN_KEYS": "container-admin-key",
    }
    env.pop("VIRTUAL_ENV", None)
    server = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        assert server.stdout is not None
        url = None
        for line in server.stdout:
            output.append(line)
            match = LISTENING.search(line)
            if match:
                url = match.group(1)
                break
        assert url, "".join(output)
        # The command is the fresh virtualenv's, not this test run's.
        assert shutil.which(argv[0], path=env["PATH"]) == str(venv / "bin" / argv[0])
        answer = httpx.get(f"{url}/healthz", timeout=10)
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
        plugins = subprocess.run(
            [str(venv / "bin" / "billing-gql"), "plugins"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for name in ("stripe", "polar", "sepay"):
            assert name in plugins.stdout, plugins.stdout + plugins.stderr
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _docker_available(), reason="no Docker daemon answers `docker info`")
def test_the_image_builds_and_its_container_serves_healthz(billing_database: TestDatabase) -> None:
    tag = f"billing-gql-test:{os.getpid()}"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=1800)
    try:
        user = subprocess.run(
            ["docker", "run", "--rm", tag, "id", "-u"], capture_output=True, text=True, check=True
        )
        assert user.stdout.strip() != "0"
        run = subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--network",
                "host",
                "-e",
                f"DATABASE_URL={billing_database.url}",
                tag,
                "billing-gql",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "18731",
                "--no-worker",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        container = run.stdout.strip()
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    answer = httpx.get("http://127.0.0.1:18731/healthz", timeout=5)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
        finally:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
