"""Cold start: seconds from launching ``billing-gql serve`` on an existing embedded database
until ``GET /healthz`` answers 200.

Run from a checkout (one command)::

    .venv/bin/python bench/cold_start.py            # goal: under 3 s

It creates an embedded PostgreSQL in a temporary directory (``DATABASE_URL`` is ignored) and
starts ``billing-gql serve`` once to initialise and migrate it (not timed). Then, ``--runs``
times, it launches ``billing-gql serve --port 0`` exactly as ``scripts/serve`` would (the
embedded server stopped in between, as after a reboot), reads the ``listening on`` line and
polls ``/healthz`` every 10 ms, timing launch → first 200. It prints each run, the median and
the worst. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

GOAL_SECONDS = 3.0


def _start(env: dict[str, str]) -> tuple[subprocess.Popen[str], float, str]:
    """Launch serve; return the process, the launch time and its URL once it says so."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "billing_gql.cli", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc, started, line.strip().removeprefix("listening on ")
    proc.wait()
    sys.exit(f"billing-gql serve exited with {proc.returncode} before listening")


def _healthy_after(url: str, started: float, timeout: float = 120.0) -> float:
    with httpx.Client(timeout=5) as client:
        while time.perf_counter() - started < timeout:
            try:
                if client.get(f"{url}/healthz").status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.01)
    sys.exit("/healthz never answered 200")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="billing-gql-cold-"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(BILLING_GQL_DATA_DIR=str(data), BILLING_GQL_ADMIN_KEYS="bench-admin-key")
    try:
        proc, started, url = _start(env)  # first start: initdb and migrations, not timed
        first = _healthy_after(url, started)
        _stop(proc)
        print(f"first start (creates and migrates the database): {first:.2f} s")
        times: list[float] = []
        for run in range(args.runs):
            proc, started, url = _start(env)
            try:
                times.append(_healthy_after(url, started))
            finally:
                _stop(proc)
            print(f"cold start {run + 1}: {times[-1]:.2f} s")
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print(f"cold start, median: {statistics.median(times):.2f} s, worst: {max(times):.2f} s")
    print(f"goal: under {GOAL_SECONDS:.0f} s: {'met' if max(times) < GOAL_SECONDS else 'NOT met'}")


if __name__ == "__main__":
    main()
